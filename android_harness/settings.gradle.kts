// The Android harness of shvit-edge: `core` (pure JVM Kotlin: bundle checks, run protocol, result documents) and
// `app` (the Android app and its instrumentation test; all logic is in core). See README.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "shvit-edge-android-harness"
include(":core", ":app")
