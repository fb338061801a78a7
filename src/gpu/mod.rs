//! GPU KV-cache copy kernels: the copies LMCache makes between vLLM's paged KV cache and its own
//! contiguous chunks, run on a real GPU so that `kvreplay calibrate gpu` measures what they cost.
//!
//! - [`reference`]: the layout transforms on the CPU, over byte slices (the specification the
//!   kernels are tested against, bit for bit).
//! - [`kernels`]: the CUDA sources (`kernels/*.cu`), compiled once with NVRTC.
//! - [`launch`]: a GPU context, buffers and typed launches of every kernel.
//! - [`calibrate`]: bandwidth and overheads of the kernels and of the memcpy baselines.
//!
//! Everything here goes through cudarc with dynamic loading: without libcuda or a device,
//! [`gpu_available`] says why and nothing panics; without libnvrtc, [`kernels::nvrtc_available`]
//! says so.

pub mod calibrate;
pub mod kernels;
pub mod launch;
pub mod reference;

use cudarc::driver::DriverError;
use std::sync::OnceLock;

/// Why a GPU operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No CUDA driver or no device (the reason from [`gpu_available`]).
    #[error("{0}")]
    Unavailable(String),
    /// libnvrtc could not be loaded.
    #[error(
        "libnvrtc not found: put a folder holding libnvrtc.so or libnvrtc.so.12 on \
         LD_LIBRARY_PATH (a CUDA toolkit's lib64, or nvidia/cuda_nvrtc/lib of the PyPI \
         package nvidia-cuda-nvrtc-cu12)"
    )]
    NoNvrtc,
    /// A CUDA driver call failed.
    #[error("CUDA driver: {what}: {source}")]
    Driver {
        /// The operation.
        what: String,
        /// The driver's error.
        source: DriverError,
    },
    /// NVRTC failed (the message carries the compile log).
    #[error("NVRTC: {0}")]
    Compile(String),
    /// A transfer whose shapes, slots or buffers do not fit together.
    #[error("invalid transfer: {0}")]
    Invalid(String),
}

impl GpuError {
    /// An [`GpuError::Invalid`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        GpuError::Invalid(msg.into())
    }
}

/// Adds what was being done to a driver error.
pub(crate) trait DriverContext<T> {
    /// Wraps the error as [`GpuError::Driver`] for `what`.
    fn during(self, what: &str) -> Result<T, GpuError>;
}

impl<T> DriverContext<T> for Result<T, DriverError> {
    fn during(self, what: &str) -> Result<T, GpuError> {
        self.map_err(|source| GpuError::Driver {
            what: what.to_string(),
            source,
        })
    }
}

/// Why no GPU can be used when the libcuda found is the CUDA toolkit's stub library.
pub const STUB_DRIVER: &str = "the libcuda.so found is the CUDA toolkit's stub, not a driver \
    (a `stubs` folder on LD_LIBRARY_PATH, or no NVIDIA driver installed)";

/// Whether a CUDA driver can be loaded and has at least one device: `Err` says which is missing.
/// Checked once per process; every GPU path calls this before touching the driver, because
/// cudarc's `CudaContext::new` panics when libcuda is absent.
pub fn gpu_available() -> Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE
        .get_or_init(|| {
            // SAFETY: only tries to dlopen libcuda under its usual names; loads nothing else.
            if !unsafe { cudarc::driver::sys::is_culib_present() } {
                return Err("no CUDA driver found (libcuda.so could not be loaded)".to_string());
            }
            cudarc::driver::result::init().map_err(|e| {
                if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_STUB_LIBRARY {
                    // The toolkit's link-time stub (lib64/stubs/libcuda.so) was loaded: there is
                    // no driver on the library path.
                    STUB_DRIVER.to_string()
                } else {
                    format!("the CUDA driver did not initialise: {e}")
                }
            })?;
            match cudarc::driver::result::device::get_count() {
                Ok(n) if n > 0 => Ok(()),
                Ok(_) => Err("no CUDA device found (the driver reports 0 devices)".to_string()),
                Err(e) => Err(format!("no CUDA device found: {e}")),
            }
        })
        .clone()
}

/// The line GPU tests print when they cannot run here.
#[cfg(test)]
pub(crate) fn skip_line(why: &str) -> String {
    format!("skipped: no CUDA driver/GPU ({why})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_is_a_clean_answer() {
        // Must not panic whether or not a driver is present, and must be stable.
        let a = gpu_available();
        assert_eq!(a, gpu_available());
        if let Err(why) = a {
            assert!(
                why.starts_with("no CUDA") || why.contains("initialise") || why == STUB_DRIVER,
                "{why}"
            );
            println!("{}", skip_line(&why));
        }
    }
}
