//! Dynamic plugins through the real `lmms` binary: the example plugin's family is listed and
//! passes `lmms parity` on its fixture, from `--plugin`, `LMMS_PLUGIN_PATH` and the plugins
//! directory; a wrong-ABI library, a library that is not a plugin and a panicking registration
//! are errors with a message, never a crash.
//!
//! The shared libraries are built by `cargo test` itself (lmms-cli names both plugin crates as
//! dev-dependencies); a missing one fails the test.

use assert_cmd::Command;
use lmms_core::plugin::PLUGIN_ABI_VERSION;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

mod common;
use common::train_losses;

/// A cdylib of this workspace, next to the test binary (`target/<profile>/deps`) or one level up.
fn library(crate_name: &str) -> PathBuf {
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let path = dir.join(&file);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "{file} is missing from {}: `cargo test -p lmms-cli` builds it (a dev-dependency); \
         or run `cargo build -p {crate_name}`",
        deps.display()
    );
}

fn example() -> PathBuf {
    library("lmms-example-dylib")
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/example-dylib")
}

/// `lmms` with an empty plugins directory, so that the user's own plugins play no part.
fn lmms(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("lmms").unwrap();
    cmd.env("LMMS_HOME", home).env_remove("LMMS_PLUGIN_PATH");
    cmd
}

#[test]
fn the_example_plugin_is_listed_and_passes_parity() {
    let home = tempfile::tempdir().unwrap();
    let lib = example();

    let out = lmms(home.path())
        .arg("--plugin")
        .arg(&lib)
        .args(["supported-models", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["family"] == "example_dylib_llava")
        .expect("the plugin's family in supported-models");
    assert_eq!(row["id"], "example-dylib-linear-llava-tiny");
    assert_eq!(row["status"], "implemented");
    assert_eq!(row["source"], "lmms-example-dylib");

    let out = lmms(home.path())
        .arg("--plugin")
        .arg(&lib)
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let plugin = rows
        .iter()
        .find(|r| r["family"] == "example_dylib_llava")
        .unwrap();
    assert_eq!(plugin["source"], "dylib");
    let canonical = lib.canonicalize().unwrap();
    assert_eq!(plugin["path"], canonical.display().to_string());
    let llava = rows.iter().find(|r| r["family"] == "llava").unwrap();
    assert_eq!(llava["source"], "built-in");

    // The subcommand is global: --plugin may come after it too.
    lmms(home.path())
        .arg("parity")
        .arg(fixture())
        .arg("--plugin")
        .arg(&lib)
        .assert()
        .success()
        .stdout(predicate::str::contains("family example_dylib_llava"))
        .stdout(predicate::str::contains("lora.grad"))
        .stdout(predicate::str::contains("FAIL").not());
}

#[test]
fn without_the_plugin_its_fixture_does_not_load() {
    // Its config.json says model_type `llava`, so the built-in LLaVA family is tried and finds
    // no two-layer projector.
    let home = tempfile::tempdir().unwrap();
    lmms(home.path())
        .arg("parity")
        .arg(fixture())
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "multi_modal_projector.linear_1.weight",
        ));
}

#[test]
fn plugins_load_from_the_variable_and_the_plugins_directory() {
    let home = tempfile::tempdir().unwrap();
    let lib = example();
    lmms(home.path())
        .env("LMMS_PLUGIN_PATH", &lib)
        .args(["plugins", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("example_dylib_llava"))
        .stdout(predicate::str::contains("1 dynamic plugins loaded"));

    let plugins = home.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::os::unix::fs::symlink(&lib, plugins.join(lib.file_name().unwrap())).unwrap();
    lmms(home.path())
        .args(["supported-models", "--family", "example_dylib_llava"])
        .assert()
        .success()
        .stdout(predicate::str::contains("example-dylib-linear-llava-tiny"));

    // A broken library in the plugins directory is skipped with a warning, not fatal.
    std::os::unix::fs::symlink(
        library("lmms-bad-abi-dylib"),
        plugins.join(format!("bad.{}", std::env::consts::DLL_EXTENSION)),
    )
    .unwrap();
    lmms(home.path())
        .args(["plugins", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("example_dylib_llava"))
        .stderr(predicate::str::contains("skipping a plugin"))
        .stderr(predicate::str::contains("plugin ABI version 999"));
}

#[test]
fn a_wrong_abi_version_is_refused_naming_both_versions() {
    let home = tempfile::tempdir().unwrap();
    let bad = library("lmms-bad-abi-dylib");
    lmms(home.path())
        .arg("--plugin")
        .arg(&bad)
        .arg("supported-models")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("was refused"))
        .stderr(predicate::str::contains("plugin ABI version 999"))
        .stderr(predicate::str::contains(format!(
            "this lmms has plugin ABI version {PLUGIN_ABI_VERSION}"
        )))
        .stderr(predicate::str::contains(
            bad.canonicalize().unwrap().display().to_string(),
        ));
    // The same from LMMS_PLUGIN_PATH.
    lmms(home.path())
        .env("LMMS_PLUGIN_PATH", &bad)
        .arg("supported-models")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("LMMS_PLUGIN_PATH"))
        .stderr(predicate::str::contains("plugin ABI version 999"));
}

/// The C library this test process runs with: a real shared library that is no plugin.
#[cfg(target_os = "linux")]
fn libc_path() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            let name = Path::new(p)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            name.starts_with("libc.so") || name.starts_with("libc-")
        })
        .map(PathBuf::from)
        .expect("libc in /proc/self/maps")
}

#[cfg(target_os = "linux")]
#[test]
fn a_library_that_is_not_a_plugin_is_an_error() {
    let home = tempfile::tempdir().unwrap();
    lmms(home.path())
        .arg("--plugin")
        .arg(libc_path())
        .arg("supported-models")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not an lmms plugin"))
        .stderr(predicate::str::contains("lmms_plugin_declaration"));
    // Not a library at all.
    lmms(home.path())
        .arg("--plugin")
        .arg(fixture().join("config.json"))
        .arg("supported-models")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot load plugin"))
        .stderr(predicate::str::contains("config.json"));
    lmms(home.path())
        .args(["--plugin", "/nonexistent/libplugin.so", "supported-models"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/nonexistent/libplugin.so"));
}

#[test]
fn a_panicking_registration_is_an_error_not_a_crash() {
    let home = tempfile::tempdir().unwrap();
    lmms(home.path())
        .env("LMMS_EXAMPLE_DYLIB_PANIC", "1")
        .arg("--plugin")
        .arg(example())
        .arg("supported-models")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "registration panicked: LMMS_EXAMPLE_DYLIB_PANIC is set",
        ));
}

/// A trainable model of the plugin's family: the tiny LLaVA of `example_data` (tokenizer, chat
/// template, image processor) with a single linear projector (its first MLP layer) and the
/// plugin's architecture.
fn linear_llava_dir(dir: &Path) {
    use lmms_core::tensor_file::{HostTensor, TensorFile, write_f32};
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example_data/tiny-llava");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name != "model.safetensors" && name != "config.json" {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["LinearProjectorLlavaForConditionalGeneration"]);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let weights = TensorFile::open(src.join("model.safetensors")).unwrap();
    let mut tensors: Vec<(String, HostTensor<f32>)> = vec![];
    for name in weights.names() {
        let t = weights.f32(&name).unwrap();
        match name.as_str() {
            "multi_modal_projector.linear_1.weight" => {
                tensors.push(("multi_modal_projector.weight".into(), t))
            }
            "multi_modal_projector.linear_1.bias" => {
                tensors.push(("multi_modal_projector.bias".into(), t))
            }
            n if n.starts_with("multi_modal_projector.") => {}
            _ => tensors.push((name, t)),
        }
    }
    write_f32(&dir.join("model.safetensors"), &tensors).unwrap();
}

/// The plugin's family trains (LoRA, loss falls) and evaluates through the real binary.
#[test]
fn the_plugin_family_trains_and_evaluates() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    std::fs::create_dir(&model).unwrap();
    linear_llava_dir(&model);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example_data/llava_dataset.json");
    let run = work.path().join("run");
    let out = lmms(home.path())
        .arg("--plugin")
        .arg(example())
        .arg("train")
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--output-dir")
        .arg(&run)
        .args([
            "--use-lora",
            "--lora-dropout",
            "0",
            "--learning-rate",
            "3e-2",
            "--max-steps",
            "12",
            "--batch-size",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let losses = train_losses(&run);
    assert_eq!(losses.len(), 12);
    assert!(losses[11] < losses[0], "{losses:?}");
    assert!(run.join("adapter_model.safetensors").is_file());

    lmms(home.path())
        .arg("--plugin")
        .arg(example())
        .arg("eval")
        .arg("--model")
        .arg(&model)
        .arg("--adapter")
        .arg(&run)
        .arg("--data")
        .arg(&data)
        .args(["--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"loss\""));
    // Without the plugin the model is not one lmms knows.
    lmms(home.path())
        .arg("train")
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--output-dir")
        .arg(work.path().join("run2"))
        .assert()
        .failure();
}
