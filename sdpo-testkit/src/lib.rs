//! Test support for the sdpo-rs workspace (not published).
//!
//! Two jobs: find the golden fixtures (the repository's `fixtures/`, or the directory named by
//! `SDPO_FIXTURES`, so a held-out set with the same layout can be swapped in), and list the
//! devices a test body must run on. The list is built by [`test_devices!`], a macro so that the
//! `wgpu` / `tch` cargo features it looks at are the *calling* crate's: `cargo test -p X
//! --features wgpu` then runs every tensor test on flex and on wgpu, one test body for all.
//!
//! It also holds the one numeric comparison every tolerance check uses ([`assert_close`],
//! [`compare`], [`max_abs_diff`] in [`compare`](mod@compare)): NaN on either side always
//! fails, which the common idiom, folding the differences with `f32::max`, silently gets wrong.
#![warn(missing_docs)]

pub mod compare;

use std::path::PathBuf;

pub use compare::{
    Comparison, Mismatch, Tolerance, assert_close, assert_close_but_outliers, assert_close_scaled,
    compare, compare_scaled, max_abs_diff,
};

pub use burn;
use burn::tensor::{DType, Device};

/// One backend to run a test body on.
#[derive(Debug, Clone)]
pub struct TestDevice {
    /// Backend name as used on the command line: `flex`, `wgpu` or `tch`.
    pub name: &'static str,
    /// The device (without autodiff; call `.autodiff()` where a test needs gradients).
    pub device: Device,
}

/// A test body's device finishes its queued work when the body is done with it: on wgpu
/// (Mesa lavapipe) a test process that exited with kernels still in flight corrupted the heap
/// at exit, after every test had passed (`fused_attention_runs_only_where_it_is_exact`, which
/// reads nothing back, crashed about 1 run in 12; 0 in 100 with the sync).
impl Drop for TestDevice {
    fn drop(&mut self) {
        // A failed sync is the test's error to report, not the drop's (it may be unwinding).
        let _ = self.device.sync();
    }
}

impl TestDevice {
    /// Pairs a backend name with its device.
    pub fn new(name: &'static str, device: Device) -> Self {
        Self { name, device }
    }

    /// Whether this backend computes in float64 (wgpu does not; flex and tch do).
    ///
    /// wgpu is ruled out by name: on Mesa lavapipe burn 0.22 reports F64 as supported (the
    /// adapter has `SHADER_F64`), and f64 storage, `+`, `*` and `sum` are right there, but the
    /// transcendentals are not: `exp([0.5, -1.25, 2, 3])` in f64 came back as denormals
    /// (~8e-315) and `log_sigmoid` as +42..+85, so the f64 goldens failed by ~1e2. SPIR-V's
    /// GLSL.std.450 `Exp`/`Log` are defined for 16/32-bit floats only, so no Vulkan driver can
    /// be trusted with them; WGSL itself has no f64.
    pub fn supports_f64(&self) -> bool {
        self.name != "wgpu" && self.device.supports_dtype(DType::F64)
    }
}

/// Keeps the devices named in `SDPO_TEST_BACKENDS` (comma-separated), or all when it is unset.
///
/// CI uses it to run, say, only the wgpu half of a `--features wgpu` build in its own step.
pub fn filter_by_env(devices: Vec<TestDevice>) -> Vec<TestDevice> {
    match std::env::var("SDPO_TEST_BACKENDS") {
        Ok(list) if !list.trim().is_empty() => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            let kept: Vec<TestDevice> = devices
                .into_iter()
                .filter(|d| wanted.contains(&d.name))
                .collect();
            assert!(
                !kept.is_empty(),
                "SDPO_TEST_BACKENDS={list} names no compiled backend"
            );
            kept
        }
        _ => devices,
    }
}

/// Every backend compiled into the calling crate's test build: flex always, plus `wgpu` and
/// `tch` when the calling crate was built with those features. Honours `SDPO_TEST_BACKENDS`.
#[macro_export]
macro_rules! test_devices {
    () => {{
        #[allow(unused_mut)]
        let mut devices = vec![$crate::TestDevice::new(
            "flex",
            $crate::burn::tensor::Device::flex(),
        )];
        #[cfg(feature = "wgpu")]
        devices.push($crate::TestDevice::new(
            "wgpu",
            $crate::burn::tensor::Device::wgpu($crate::burn::tensor::DeviceKind::DefaultDevice),
        ));
        #[cfg(feature = "tch")]
        {
            // burn 0.22 marks its LibTorch backend deprecated; we keep it for CUDA users.
            #[allow(deprecated)]
            devices.push($crate::TestDevice::new(
                "tch",
                $crate::burn::tensor::Device::libtorch(),
            ));
        }
        $crate::filter_by_env(devices)
    }};
}

/// The fixture directory: `SDPO_FIXTURES` when set, else the repository's `fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("SDPO_FIXTURES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
    }
}

/// The tiny checkpoints of the fixture set: every directory under `models/` of
/// [`fixtures_dir`] that holds a `golden.json`, sorted by name. Golden tests iterate this list,
/// so a model added to the fixtures (or a held-out set with other models) is checked without
/// editing a test.
///
/// # Panics
/// When the directory cannot be read or holds no model (a golden test must check something).
pub fn fixture_model_names() -> Vec<String> {
    let dir = fixtures_dir().join("models");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list fixture models in {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
        .filter(|entry| entry.path().join("golden.json").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no model with a golden.json in {}",
        dir.display()
    );
    names
}

/// Reads a fixture file as a string, panicking with the path on failure (tests only).
pub fn read_fixture(relative: &str) -> String {
    let path = fixtures_dir().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// The SmolLM2-135M-Instruct checkpoint directory from `SDPO_SMOLLM2_DIR`.
///
/// Tests that need the real weights are `#[ignore = "needs SDPO_SMOLLM2_DIR
/// (tools/get-smollm2.sh)"]` and call this first: run with `--include-ignored` (CI does, with
/// the weights present) they fail loudly when the directory is missing instead of passing
/// without checking anything.
///
/// # Panics
/// When `SDPO_SMOLLM2_DIR` is unset or empty, or names a directory without `config.json` and
/// `model.safetensors`.
pub fn smollm2_dir() -> PathBuf {
    let dir = std::env::var_os("SDPO_SMOLLM2_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "SDPO_SMOLLM2_DIR is not set: this test needs the SmolLM2-135M-Instruct weights \
                 (make them with `tools/get-smollm2.sh DIR`, then SDPO_SMOLLM2_DIR=DIR)"
            )
        });
    for file in ["config.json", "model.safetensors"] {
        assert!(
            dir.join(file).is_file(),
            "SDPO_SMOLLM2_DIR={} has no {file} (make it with `tools/get-smollm2.sh DIR`)",
            dir.display()
        );
    }
    dir
}
