plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// the runtimes' versions: the dependencies below, and each run's `runtime_version` in the result document
val litertVersion = "1.4.0"
val executorchVersion = "1.0.1"

android {
    namespace = "dev.shvitedge.harness"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.shvitedge.harness"
        // java.nio.file (SafePath), java.time and java.util.Base64 in core need API 26
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        testApplicationId = "dev.shvitedge.harness.test"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        buildConfigField("String", "LITERT_VERSION", "\"$litertVersion\"")
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    signingConfigs {
        // A release build measures what users run (no debuggable runtime checks). It is signed with the debug key
        // unless you give your own: gradle -Pshvit.keystore=... -Pshvit.keystorePassword=... -Pshvit.keyAlias=...
        // -Pshvit.keyPassword=...
        create("release") {
            val store = project.findProperty("shvit.keystore") as String?
            if (store != null) {
                storeFile = file(store)
                storePassword = project.findProperty("shvit.keystorePassword") as String?
                keyAlias = project.findProperty("shvit.keyAlias") as String?
                keyPassword = project.findProperty("shvit.keyPassword") as String?
            } else {
                val debug = getByName("debug")
                storeFile = debug.storeFile
                storePassword = debug.storePassword
                keyAlias = debug.keyAlias
                keyPassword = debug.keyPassword
            }
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            isDebuggable = false
            signingConfig = signingConfigs.getByName("release")
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    // `./gradlew :app:assembleAndroidTest` builds the instrumentation APK against the release app, so the test
    // measures the release build
    testBuildType = "release"

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
    buildFeatures {
        buildConfig = true
    }
    packaging {
        jniLibs {
            // models are read by the runtimes from files; keep native libraries extractable for older devices
            useLegacyPackaging = true
        }
    }
    androidResources {
        noCompress += listOf("tflite", "pte")
    }
}

dependencies {
    implementation(project(":core"))

    // LiteRT (TensorFlow Lite's successor; same org.tensorflow.lite API): CPU with XNNPACK, GPU delegate, NNAPI delegate
    implementation("com.google.ai.edge.litert:litert:$litertVersion")
    implementation("com.google.ai.edge.litert:litert-gpu:$litertVersion")
    implementation("com.google.ai.edge.litert:litert-gpu-api:$litertVersion")

    // ExecuTorch (Module API, XNNPACK backend built in; fbjni and SoLoader come with it from Maven Central)
    implementation("org.pytorch:executorch-android:$executorchVersion")

    implementation("androidx.core:core-ktx:1.15.0")
    implementation("androidx.appcompat:appcompat:1.7.0")

    androidTestImplementation("androidx.test:runner:1.6.2")
    androidTestImplementation("androidx.test:core:1.6.1")
    androidTestImplementation("androidx.test.ext:junit:1.2.1")
    androidTestImplementation("junit:junit:4.13.2")
}
