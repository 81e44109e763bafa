//! Choosing the burn device from `--device` / `BURN_DEVICE` among the compiled backends.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// The backends compiled into this binary, in order of preference.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "flex") {
        out.push("flex");
    }
    if cfg!(feature = "wgpu") {
        out.push("wgpu");
    }
    if cfg!(feature = "tch") {
        out.push("tch");
    }
    out
}

/// `sdpo --version`: the version and the compiled backends.
pub fn version_string() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (backends: {})",
            env!("CARGO_PKG_VERSION"),
            compiled_backends().join(", ")
        )
    })
}

/// The device for `name` (or the first compiled backend), or an error listing the compiled
/// ones. For tch, `BURN_TCH_CUDA=<index>` picks a CUDA device instead of the CPU.
pub fn select_device(name: Option<&str>) -> Result<(&'static str, Device)> {
    let compiled = compiled_backends();
    let Some(&first) = compiled.first() else {
        bail!(
            "this sdpo binary was built without a backend; rebuild with --features flex, wgpu or tch"
        );
    };
    let wanted = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(first);
    let Some(&backend) = compiled.iter().find(|&&b| b == wanted) else {
        bail!(
            "backend `{wanted}` is not compiled into this binary; compiled: {} (rebuild with --features {wanted})",
            compiled.join(", ")
        );
    };
    Ok((backend, make_device(backend)))
}

fn make_device(backend: &str) -> Device {
    match backend {
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "tch")]
        "tch" => {
            // burn 0.22 marks LibTorch deprecated; we keep it for CUDA through PyTorch.
            #[allow(deprecated)]
            match std::env::var("BURN_TCH_CUDA")
                .ok()
                .and_then(|i| i.parse::<usize>().ok())
            {
                Some(index) => Device::libtorch_cuda(index),
                None => Device::libtorch(),
            }
        }
        _ => Device::default(),
    }
}
