//! Test support for the sdpo-rs workspace (not published).
//!
//! Two jobs: find the golden fixtures (the repository's `fixtures/`, or the directory named by
//! `SDPO_FIXTURES`, so a held-out set with the same layout can be swapped in), and list the
//! devices a test body must run on. The list is built by [`test_devices!`], a macro so that the
//! `wgpu` / `tch` cargo features it looks at are the *calling* crate's: `cargo test -p X
//! --features wgpu` then runs every tensor test on flex and on wgpu, one test body for all.
#![warn(missing_docs)]

use std::path::PathBuf;

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

/// Reads a fixture file as a string, panicking with the path on failure (tests only).
pub fn read_fixture(relative: &str) -> String {
    let path = fixtures_dir().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// The SmolLM2-135M-Instruct checkpoint directory from `SDPO_SMOLLM2_DIR`, if set.
pub fn smollm2_dir() -> Option<PathBuf> {
    std::env::var_os("SDPO_SMOLLM2_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}
