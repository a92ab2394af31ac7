//! Device choice: CPU by default; CUDA or Metal when built with those features and asked for.

use candle_core::Device;

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// The first CUDA GPU (needs the `cuda` feature).
    Cuda,
    /// The Apple GPU (needs the `metal` feature).
    Metal,
}

/// The candle device for a choice, or why it is not available in this build.
pub fn select_device(choice: DeviceChoice) -> Result<Device, crate::ModelError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            Device::new_cuda(0).map_err(|e| crate::ModelError::Load(format!("CUDA device: {e}")))
        }
        DeviceChoice::Metal => {
            Device::new_metal(0).map_err(|e| crate::ModelError::Load(format!("Metal device: {e}")))
        }
    }
}
