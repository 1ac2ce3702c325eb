//! Picks the Burn device the model runs on. `cpu` is Burn Flex (pure Rust,
//! rayon + SIMD); `wgpu` (Vulkan/Metal/DX12) exists only in builds with the
//! `wgpu` cargo feature.

use burn::tensor::Device;

use crate::error::Result;

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Cpu,
    Wgpu,
}

/// The device for `backend`, or a clear error when this build lacks it.
pub fn device_for(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        Backend::Wgpu => wgpu_device(),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device> {
    Err(crate::error::Error::Config(
        "this ember-runtime was built without the 'wgpu' feature; use --backend cpu".into(),
    ))
}
