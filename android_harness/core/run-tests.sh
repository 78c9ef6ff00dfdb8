#!/usr/bin/env bash
# Compile android_harness/core (main + tests) with kotlinc, no Gradle, and run its JUnit 4 tests against the golden
# vectors in tests/golden/. Exits non-zero when anything fails.
#
#   KOTLINC      kotlinc to use (default: `kotlinc` on PATH)
#   JUNIT_JAR    JUnit 4 jar     (default: /usr/share/java/junit4.jar; Debian package junit4)
#   HAMCREST_JAR hamcrest-core   (default: /usr/share/java/hamcrest-core.jar)
#   GOLDEN_DIR   golden vectors  (default: ../../tests/golden relative to this script)
#   GOLDEN_UPDATE=1              rewrite tests/golden/result_kotlin.json instead of comparing with it
#   BUILD_DIR    where classes go (default: a temporary folder, removed at exit)
#   JAVA         java to run the tests with (default: java next to KOTLINC's JDK, i.e. `java` on PATH)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kotlinc="${KOTLINC:-kotlinc}"
if ! command -v "$kotlinc" >/dev/null 2>&1; then
  echo "run-tests.sh: kotlinc not found (set KOTLINC, e.g. KOTLINC=.tools/node_modules/kotlin-compiler/bin/kotlinc)" >&2
  exit 2
fi
junit="${JUNIT_JAR:-/usr/share/java/junit4.jar}"
hamcrest="${HAMCREST_JAR:-/usr/share/java/hamcrest-core.jar}"
for jar in "$junit" "$hamcrest"; do
  if [ ! -f "$jar" ]; then
    echo "run-tests.sh: $jar not found (apt-get install junit4, or set JUNIT_JAR / HAMCREST_JAR)" >&2
    exit 2
  fi
done
golden="${GOLDEN_DIR:-$here/../../tests/golden}"
if [ ! -d "$golden" ]; then
  echo "run-tests.sh: no golden vectors at $golden (set GOLDEN_DIR)" >&2
  exit 2
fi
golden="$(cd "$golden" && pwd)"
java="${JAVA:-java}"

# kotlin-stdlib ships with kotlinc: lib/ beside bin/ (npm kotlin-compiler, the GitHub zip, SDKMAN all lay it out so)
kotlinc_path="$(command -v "$kotlinc")"
kotlinc_real="$(readlink -f "$kotlinc_path" 2>/dev/null || echo "$kotlinc_path")"
stdlib="$(dirname "$kotlinc_real")/../lib/kotlin-stdlib.jar"
if [ ! -f "$stdlib" ]; then
  echo "run-tests.sh: kotlin-stdlib.jar not found beside $kotlinc_real" >&2
  exit 2
fi

if [ -n "${BUILD_DIR:-}" ]; then
  build="$BUILD_DIR"
  mkdir -p "$build"
else
  build="$(mktemp -d "${TMPDIR:-/tmp}/shvit-edge-core.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
fi

classes="$build/classes"
rm -rf "$classes"
mkdir -p "$classes"
echo "compiling core (main + tests) with $kotlinc ..."
start=$(date +%s)
# one kotlinc invocation for main and tests: the JVM starts once
"$kotlinc" -nowarn -jvm-target 17 -cp "$junit:$hamcrest" -d "$classes" \
  "$here/src/main/kotlin" "$here/src/test/kotlin"
echo "compiled in $(( $(date +%s) - start )) s"

tests=()
while IFS= read -r f; do
  name="${f#"$here/src/test/kotlin/"}"
  name="${name%.kt}"
  tests+=("${name//\//.}")
done < <(find "$here/src/test/kotlin" -name '*Test.kt' | sort)

log="$build/junit.txt"
set +e
"$java" -Dgolden.dir="$golden" -Dgolden.update="${GOLDEN_UPDATE:-0}" \
  -cp "$classes:$stdlib:$junit:$hamcrest" org.junit.runner.JUnitCore "${tests[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# the closing line: "core: N passed, N failed" (JUnitCore prints "OK (N tests)" or "Tests run: N,  Failures: M")
passed=0
failed=0
if ok="$(grep -E '^OK \([0-9]+ tests?\)' "$log" | tail -1)" && [ -n "$ok" ]; then
  passed="$(echo "$ok" | sed -E 's/^OK \(([0-9]+) tests?\).*/\1/')"
elif run="$(grep -E '^Tests run: [0-9]+, +Failures: [0-9]+' "$log" | tail -1)" && [ -n "$run" ]; then
  total="$(echo "$run" | sed -E 's/^Tests run: ([0-9]+),.*/\1/')"
  failed="$(echo "$run" | sed -E 's/.*Failures: ([0-9]+).*/\1/')"
  passed=$(( total - failed ))
elif [ "$status" -ne 0 ]; then
  failed=1
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "core: $passed passed, $failed failed"
exit "$status"
