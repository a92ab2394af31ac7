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

/// Fix the CPU thread count candle uses for matrix products, once, at process start.
///
/// Unless `RAYON_NUM_THREADS` is set, candle works the count out again on every matrix product
/// by reading `/proc/cpuinfo`; that alone measured as 28% of a one-sentence embedding. Call this
/// from `main` before any other thread starts (it sets the variable to the cores this process
/// may use); a value the user set is kept.
pub fn settle_thread_count() -> usize {
    if let Some(n) = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    n
}
