//! Device memory of an executor: allocations made once at build time and never
//! resized — the activation arena (every intermediate tensor at its planned offset), the
//! weights (constants uploaded once, shared with other executors through a
//! `WeightStore`: small ones packed 256-byte aligned, large ones in buffers of their
//! own; `WeightPlace`s map the plan's packed layout onto them) and one workspace
//! shared by the launches that need scratch memory (cuBLASLt, cuDNN, temporaries).
//! Tensors are views (buffer, offset, bytes) into them. Pinned host buffers stage the
//! asynchronous copies of inputs and outputs.
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

/// Where one constant of the plan's weights layout is on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightPlace {
    /// Its offset in the plan's packed layout ([`crate::plan::WeightEntry::offset`]).
    pub plan_offset: usize,
    pub bytes: usize,
    /// Its device address (in a shared pack or its own buffer, see `crate::weights`).
    pub addr: CUdeviceptr,
}

/// The buffers of an executor.
#[derive(Debug)]
pub struct DeviceMemory {
    pub arena: DeviceBuffer,
    /// The packed weights: every constant when `weight_places` is empty; otherwise the
    /// small constants only, shared with other executors through a `WeightStore`.
    pub weights: Arc<DeviceBuffer>,
    pub workspace: DeviceBuffer,
    /// Where each constant of the plan is, sorted by plan offset (see [`WeightPlace`]);
    /// empty when the plan's layout is `weights` itself.
    pub weight_places: Vec<WeightPlace>,
    /// The large constants' own buffers (shared through a `WeightStore`), kept alive here.
    pub large_weights: Vec<Arc<DeviceBuffer>>,
}

impl DeviceMemory {
    /// Allocates the arena, the weights and the workspace (any may be 0 bytes).
    pub fn alloc(ctx: &Arc<CudaContext>, arena: usize, weights: usize, workspace: usize) -> Result<DeviceMemory> {
        Ok(DeviceMemory {
            arena: DeviceBuffer::alloc(ctx, arena, "the activation arena")?,
            weights: Arc::new(DeviceBuffer::alloc(ctx, weights, "the weights")?),
            workspace: DeviceBuffer::alloc(ctx, workspace, "the workspace")?,
            weight_places: Vec::new(),
            large_weights: Vec::new(),
        })
    }

    pub fn buffer(&self, kind: BufferKind) -> &DeviceBuffer {
        match kind {
            BufferKind::Arena => &self.arena,
            BufferKind::Weights => &self.weights,
            BufferKind::Workspace => &self.workspace,
        }
    }

    /// The device address of `view`, checked to lie inside its buffer (for the weights,
    /// inside one constant).
    pub fn ptr(&self, view: View) -> Result<CUdeviceptr> {
        if view.buffer == BufferKind::Weights && !self.weight_places.is_empty() {
            return self.weight_ptr(view);
        }
        let b = self.buffer(view.buffer);
        b.check(view.offset, view.bytes)?;
        Ok(b.ptr + view.offset as u64)
    }

    /// A view of the plan's weights layout translated to where its constant lives.
    fn weight_ptr(&self, view: View) -> Result<CUdeviceptr> {
        let i = self.weight_places.partition_point(|p| p.plan_offset <= view.offset);
        let place = i.checked_sub(1).map(|i| self.weight_places[i]);
        match place {
            Some(p) if view.offset + view.bytes <= p.plan_offset + p.bytes => {
                Ok(p.addr + (view.offset - p.plan_offset) as u64)
            }
            // Nothing is read through an empty view.
            _ if view.bytes == 0 => Ok(self.weights.ptr),
            _ => Err(CudaError::driver(
                "the weights",
                format!("range {}..{} is in no constant", view.offset, view.offset + view.bytes),
            )),
        }
    }

    /// Total bytes held (shared weights counted in full, as if this executor were alone).
    pub fn total_bytes(&self) -> usize {
        let large: usize = self.large_weights.iter().map(|b| b.bytes).sum();
        self.arena.bytes + self.weights.bytes + self.workspace.bytes + large
    }
}

/// Page-locked host memory (cuMemHostAlloc): the staging buffers of asynchronous copies,
/// which must not be pageable memory for the copy to be truly asynchronous.
pub struct PinnedBuffer {
    ctx: Arc<CudaContext>,
    ptr: *mut u8,
    bytes: usize,
}

// SAFETY: the allocation is owned by this value and tied to no thread (the context is
// bound before each driver call); it is read through `&self` and written through
// `&mut self`, like a `Vec<u8>`.
unsafe impl Send for PinnedBuffer {}
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// Allocates `bytes` bytes of pinned host memory for `what` (named in errors).
    pub fn alloc(ctx: &Arc<CudaContext>, bytes: usize, what: &str) -> Result<PinnedBuffer> {
        if bytes == 0 {
            return Ok(PinnedBuffer { ctx: ctx.clone(), ptr: std::ptr::null_mut(), bytes });
        }
        ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        // SAFETY: the context is bound; the memory is freed once, in Drop, and only read
        // as bytes (any pattern is valid).
        let ptr = unsafe { result::malloc_host(bytes, 0) }
            .map_err(|e| CudaError::driver(format!("allocating {bytes} pinned host bytes for {what}"), e))?;
        Ok(PinnedBuffer { ctx: ctx.clone(), ptr: ptr as *mut u8, bytes })
    }

    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.bytes == 0 {
            return &[];
        }
        // SAFETY: `ptr` holds `bytes` bytes owned by self. A copy the GPU may still be
        // writing is waited for by the executor before it reads.
        unsafe { std::slice::from_raw_parts(self.ptr, self.bytes) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.bytes == 0 {
            return &mut [];
        }
        // SAFETY: as above, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.bytes) }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        if !self.ptr.is_null() && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_host, freed once here.
            let r = unsafe { result::free_host(self.ptr as *mut std::ffi::c_void) };
            self.ctx.record_err(r);
        }
    }
}

impl std::fmt::Debug for PinnedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedBuffer({} bytes)", self.bytes)
    }
}
