//! Opening a GPU: the driver is found first (a missing driver is an error, not
//! cudarc's panic), then the context, the device's name and compute capability.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::libs::{self, Lib};
use crate::{CudaError, Result};

/// One GPU and Kiln's context on it.
pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    /// Compute capability (major, minor), e.g. (9, 0) for Hopper.
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
    /// Driver API version, e.g. 13000.
    pub driver_version: i32,
}

impl Device {
    /// Opens GPU `ordinal`.
    pub fn open(ordinal: usize) -> Result<Device> {
        libs::ensure(Lib::Driver)?;
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoDevice(format!("GPU {ordinal} asked for, the driver sees {count}")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::driver("creating a context", e))?;
        let name = ctx.name().map_err(|e| CudaError::driver("reading the device name", e))?;
        let compute_capability =
            ctx.compute_capability().map_err(|e| CudaError::driver("reading the compute capability", e))?;
        let (_, total_memory) = ctx.mem_get_info().map_err(|e| CudaError::driver("reading memory", e))?;
        let driver_version = driver_version()?;
        let stream = ctx.default_stream();
        Ok(Device { ctx, stream, name, compute_capability, total_memory, driver_version })
    }

    /// `sm_90`-style architecture name for NVRTC.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.compute_capability.0, self.compute_capability.1)
    }
}

/// How many GPUs the driver sees (0 on a machine with a driver and no GPU).
pub fn device_count() -> Result<usize> {
    libs::ensure(Lib::Driver)?;
    use cudarc::driver::result;
    result::init().map_err(|e| CudaError::NoDevice(format!("the driver did not initialise: {e}")))?;
    let n = result::device::get_count().map_err(|e| CudaError::driver("counting devices", e))?;
    if n <= 0 {
        return Err(CudaError::NoDevice("the driver sees no GPU".into()));
    }
    Ok(n as usize)
}

fn driver_version() -> Result<i32> {
    let mut v = 0;
    // SAFETY: the driver is loaded (ensure) and initialised (device_count).
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }
        .result()
        .map_err(|e| CudaError::driver("reading the driver version", e))?;
    Ok(v)
}
