//! Device memory of an executor: three allocations made once at build time and never
//! resized — the activation arena (every intermediate tensor at its planned offset), the
//! weights (every constant packed, 256-byte aligned, uploaded once) and one workspace
//! shared by the launches that need scratch memory (cuBLASLt). Tensors are views
//! (buffer, offset, bytes) into them.
//!
//! Allocation checks the free memory first, so running out is `CudaError::OutOfMemory`
//! naming what was being allocated and how many bytes, never a bare driver code.

use std::sync::Arc;

use cudarc::driver::sys::{CUdeviceptr, CUresult};
use cudarc::driver::{CudaContext, CudaStream, DriverError, result};

use crate::{CudaError, Result};

/// One device allocation, freed on drop.
pub struct DeviceBuffer {
    ctx: Arc<CudaContext>,
    ptr: CUdeviceptr,
    bytes: usize,
    what: String,
}

impl DeviceBuffer {
    /// Allocates `bytes` bytes for `what` (named in errors). Zero bytes allocate nothing.
    pub fn alloc(ctx: &Arc<CudaContext>, bytes: usize, what: &str) -> Result<DeviceBuffer> {
        let buffer = |ptr| DeviceBuffer { ctx: ctx.clone(), ptr, bytes, what: what.to_string() };
        if bytes == 0 {
            return Ok(buffer(0));
        }
        ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        let oom = || CudaError::OutOfMemory { what: what.to_string(), bytes };
        let (free, _total) = ctx.mem_get_info().map_err(|e| CudaError::driver("reading free memory", e))?;
        if bytes > free {
            return Err(oom());
        }
        // SAFETY: the context is bound; the pointer is freed once, in Drop.
        match unsafe { result::malloc_sync(bytes) } {
            Ok(ptr) => Ok(buffer(ptr)),
            Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)) => Err(oom()),
            Err(e) => Err(CudaError::driver(format!("allocating {bytes} bytes for {what}"), e)),
        }
    }

    pub fn ptr(&self) -> CUdeviceptr {
        self.ptr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Copies `data` to `offset` on `stream` (and waits: `data` may be freed at once).
    pub fn upload(&self, stream: &CudaStream, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        // SAFETY: the range is inside the allocation (checked); the copy is complete
        // before `data` can be dropped (synchronize below).
        unsafe { result::memcpy_htod_async(self.ptr + offset as u64, data, stream.cu_stream()) }
            .and_then(|()| stream.synchronize())
            .map_err(|e| CudaError::driver(format!("copying {} bytes into {}", data.len(), self.what), e))
    }

    /// Copies `out.len()` bytes from `offset` into `out` and waits.
    pub fn download(&self, stream: &CudaStream, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        if out.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        // SAFETY: the range is inside the allocation (checked); we wait for the copy.
        unsafe { result::memcpy_dtoh_async(out, self.ptr + offset as u64, stream.cu_stream()) }
            .and_then(|()| stream.synchronize())
            .map_err(|e| CudaError::driver(format!("copying {} bytes out of {}", out.len(), self.what), e))
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.bytes) {
            return Err(CudaError::driver(
                self.what.clone(),
                format!("range {offset}..{} is outside its {} bytes", offset.saturating_add(len), self.bytes),
            ));
        }
        Ok(())
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ptr != 0 && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_sync, freed only here. A failure to free cannot
            // be reported from Drop; the context records it.
            let r = unsafe { result::free_sync(self.ptr) };
            self.ctx.record_err(r);
        }
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({}, {} bytes at {:#x})", self.what, self.bytes, self.ptr)
    }
}

/// Which of an executor's buffers a view is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    Arena,
    Weights,
    Workspace,
}

/// A range of one of the buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub buffer: BufferKind,
    pub offset: usize,
    pub bytes: usize,
}

/// The three buffers of an executor.
#[derive(Debug)]
pub struct DeviceMemory {
    pub arena: DeviceBuffer,
    pub weights: DeviceBuffer,
    pub workspace: DeviceBuffer,
}

impl DeviceMemory {
    /// Allocates the arena, the weights and the workspace (any may be 0 bytes).
    pub fn alloc(ctx: &Arc<CudaContext>, arena: usize, weights: usize, workspace: usize) -> Result<DeviceMemory> {
        Ok(DeviceMemory {
            arena: DeviceBuffer::alloc(ctx, arena, "the activation arena")?,
            weights: DeviceBuffer::alloc(ctx, weights, "the weights")?,
            workspace: DeviceBuffer::alloc(ctx, workspace, "the workspace")?,
        })
    }

    pub fn buffer(&self, kind: BufferKind) -> &DeviceBuffer {
        match kind {
            BufferKind::Arena => &self.arena,
            BufferKind::Weights => &self.weights,
            BufferKind::Workspace => &self.workspace,
        }
    }

    /// The device address of `view`, checked to lie inside its buffer.
    pub fn ptr(&self, view: View) -> Result<CUdeviceptr> {
        let b = self.buffer(view.buffer);
        b.check(view.offset, view.bytes)?;
        Ok(b.ptr + view.offset as u64)
    }

    /// Total bytes held.
    pub fn total_bytes(&self) -> usize {
        self.arena.bytes + self.weights.bytes + self.workspace.bytes
    }
}
