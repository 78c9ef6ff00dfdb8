// Pure-JVM Kotlin: the same sources run in the app and in plain JUnit (run-tests.sh compiles them with kotlinc alone).
// It has no runtime dependency: its JSON reader is its own (strict; Android's org.json is lenient).
plugins {
    kotlin("jvm")
}

kotlin {
    jvmToolchain(17)
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

dependencies {
    // No org.json: Android ships it, but it is lenient (comments, single quotes, unquoted strings, NaN in arrays,
    // duplicate keys overwritten), so the core reads JSON with its own strict reader (Json.kt).
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    // the golden vectors of the Python side, as run-tests.sh passes them
    systemProperty("golden.dir", rootProject.projectDir.resolve("../tests/golden").absolutePath)
    systemProperty("golden.update", System.getenv("GOLDEN_UPDATE") ?: "0")
}
