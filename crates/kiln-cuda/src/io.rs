//! An executor's inference in asynchronous phases, for engines and benchmarks.
//!
//! - `upload_inputs` → `enqueue` → `download_outputs`: host tensors in, one inference,
//!   host tensors out; only the last waits.
//! - `begin` / `finish`: the same phases with CUDA events between them and no wait in
//!   `begin`, so that one host thread can start several executors (each on its own
//!   stream) and then collect them: the per-phase GPU times and the host time `begin`
//!   took.
//! - `copy_input_from_device` / `copy_output_to_device`: stream-ordered copies between
//!   the executor's slots and memory the caller owns on the same GPU.
//!
//! Host transfers go through pinned (page-locked) staging buffers, allocated on first
//! use: a copy from pageable memory is not asynchronous, and the staging buffer lets the
//! caller's tensors go as soon as `upload_inputs` returns. Inputs are copied into the
//! staging buffer on the host first (after waiting for the previous upload out of it).

use std::time::Instant;

use cudarc::driver::CudaEvent;
use cudarc::driver::result;
use cudarc::driver::sys::CUevent_flags;
use kiln_ir::{DType, Tensor};

use crate::executor::{AlignedBytes, Executor, host_tensor};
use crate::memory::PinnedBuffer;
use crate::planner::ALIGN;
use crate::{CudaError, Result};

/// GPU time of each phase of one `begin`/`finish` (ms, from CUDA events) and the host
/// time `begin` took to enqueue them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    /// Host → device copies of the inputs (0 when `begin` had no inputs).
    pub h2d_ms: f32,
    pub compute_ms: f32,
    /// Device → host copies of the outputs (0 when `begin` had no inputs).
    pub d2h_ms: f32,
    /// Host milliseconds `begin` took.
    pub enqueue_ms: f64,
}

/// A graph input or output as the executor holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

/// A pinned staging buffer and each tensor's offset in it.
struct Staging {
    buf: PinnedBuffer,
    offsets: Vec<usize>,
}

/// One `begin` not yet finished.
struct Phase {
    transfers: bool,
    enqueue_ms: f64,
}

/// The executor's state for the asynchronous phases.
#[derive(Default)]
pub(crate) struct IoState {
    inputs: Option<Staging>,
    outputs: Option<Staging>,
    /// Recorded after the copies out of the input staging: it is not rewritten before.
    uploaded: Option<CudaEvent>,
    /// The four marks of `begin`: start, inputs copied, computed, outputs copied.
    marks: Vec<CudaEvent>,
    phase: Option<Phase>,
    /// The output staging holds the outputs of the last inference.
    staged: bool,
}

/// Offsets of `sizes` packed `ALIGN`-aligned, and the total.
fn pack(sizes: impl Iterator<Item = usize>) -> (Vec<usize>, usize) {
    let mut end = 0;
    let offsets = sizes
        .map(|b| {
            let o = end;
            end = (end + b).next_multiple_of(ALIGN);
            o
        })
        .collect();
    (offsets, end)
}

impl Executor {
    /// The graph's inputs, in order.
    pub fn input_slots(&self) -> Vec<SlotInfo> {
        self.slot_infos(&self.plan.inputs)
    }

    /// The graph's outputs, in order.
    pub fn output_slots(&self) -> Vec<SlotInfo> {
        self.slot_infos(&self.plan.outputs)
    }

    fn slot_infos(&self, ids: &[usize]) -> Vec<SlotInfo> {
        ids.iter()
            .map(|&id| self.plan.slot(id))
            .map(|s| SlotInfo { name: s.name.clone(), dtype: s.dtype, shape: s.shape.clone(), bytes: s.bytes })
            .collect()
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))
    }

    /// Enqueues the copies of `inputs` (checked as `run` checks them) into their slots,
    /// through the pinned staging buffer; does not wait for them.
    pub fn upload_inputs(&mut self, inputs: &[Tensor]) -> Result<()> {
        self.stage_inputs(inputs)?;
        self.enqueue_uploads()
    }

    /// Checks `inputs` and copies them into the pinned input staging (on the host, after
    /// waiting for the previous upload out of it).
    fn stage_inputs(&mut self, inputs: &[Tensor]) -> Result<()> {
        self.check_inputs(inputs)?;
        self.bind()?;
        if let Some(e) = &self.io.uploaded {
            // The previous upload may still be reading the staging buffer.
            e.synchronize().map_err(|e| CudaError::driver("waiting for the previous upload", e))?;
        }
        let sizes = self.slot_addrs(&self.plan.inputs)?;
        let staging = staging(&mut self.io.inputs, &self.ctx, &sizes, "the input staging")?;
        for ((t, &off), (&id, &(_, len))) in
            inputs.iter().zip(&staging.offsets).zip(self.plan.inputs.iter().zip(&sizes))
        {
            let bytes: &[u8] = t.bytes();
            let dst = staging.buf.as_mut_slice().get_mut(off..off + len).filter(|_| bytes.len() == len);
            let dst = dst.ok_or_else(|| CudaError::Input {
                name: self.plan.slot(id).name.clone(),
                msg: format!("{} bytes given, its slot holds {len}", bytes.len()),
            })?;
            dst.copy_from_slice(bytes);
        }
        self.io.staged = false;
        Ok(())
    }

    /// Enqueues the copies from the input staging into the input slots.
    fn enqueue_uploads(&mut self) -> Result<()> {
        let dsts = self.slot_addrs(&self.plan.inputs)?;
        let staging = self.io.inputs.as_ref().ok_or_else(|| CudaError::Graph("no inputs staged".into()))?;
        for (&(dst, len), &off) in dsts.iter().zip(&staging.offsets) {
            if len == 0 {
                continue;
            }
            let src = &staging.buf.as_slice()[off..off + len];
            // SAFETY: `dst` is the input's slot, `len` bytes long; `src` is pinned memory
            // owned by the executor, not rewritten before `uploaded` completes
            // (`stage_inputs` waits for it) and not freed before the stream is
            // synchronised (Drop).
            unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
                .map_err(|e| CudaError::driver("copying an input to the GPU", e))?;
        }
        let done = match self.io.uploaded.take() {
            Some(e) => e,
            None => self.event(CUevent_flags::CU_EVENT_DISABLE_TIMING)?,
        };
        done.record(&self.stream).map_err(|e| CudaError::driver("recording an event", e))?;
        self.io.uploaded = Some(done);
        Ok(())
    }

    /// Enqueues one inference (the CUDA graph's replay, or the launches) on the
    /// executor's stream; does not wait.
    pub fn enqueue(&mut self) -> Result<()> {
        self.io.staged = false;
        self.enqueue_launches(false)
    }

    /// Copies the outputs back (waiting for everything enqueued before).
    pub fn download_outputs(&mut self) -> Result<Vec<Tensor>> {
        self.stage_outputs()?;
        self.synchronize()?;
        self.io.staged = true;
        self.staged_outputs()
    }

    /// Waits for everything enqueued on the executor's stream.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream.synchronize().map_err(|e| CudaError::driver("synchronising the executor's stream", e))
    }

    /// Enqueues the copies of the outputs into the pinned output staging.
    fn stage_outputs(&mut self) -> Result<()> {
        self.bind()?;
        let srcs = self.slot_addrs(&self.plan.outputs)?;
        let staging = staging(&mut self.io.outputs, &self.ctx, &srcs, "the output staging")?;
        for (&(src, bytes), &off) in srcs.iter().zip(&staging.offsets) {
            if bytes == 0 {
                continue;
            }
            let dst = &mut staging.buf.as_mut_slice()[off..off + bytes];
            // SAFETY: `src` is the output's slot of `bytes` bytes; `dst` is pinned
            // memory owned by the executor, read only after the stream is synchronised
            // (`finish`, `download_outputs`) and not freed before (Drop synchronises).
            unsafe { result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
                .map_err(|e| CudaError::driver("copying an output to the host", e))?;
        }
        Ok(())
    }

    /// The outputs the last `download_outputs` or `finish` (of a `begin` with inputs)
    /// copied into the staging buffer, as tensors.
    pub fn staged_outputs(&self) -> Result<Vec<Tensor>> {
        let staging = self.io.outputs.as_ref().filter(|_| self.io.staged).ok_or_else(|| {
            CudaError::Graph("no outputs staged: call finish after begin with inputs, or download_outputs".into())
        })?;
        let mut out = Vec::with_capacity(self.plan.outputs.len());
        for (&id, &off) in self.plan.outputs.iter().zip(&staging.offsets) {
            let slot = self.plan.slot(id);
            let mut host = AlignedBytes::new(slot.bytes);
            host.as_mut().copy_from_slice(&staging.buf.as_slice()[off..off + slot.bytes]);
            out.push(host_tensor(slot, host)?);
        }
        Ok(out)
    }

    /// Enqueues one inference with events between its phases and returns without
    /// waiting: with `Some(inputs)`, their upload, the compute and the outputs' copy into
    /// the pinned staging (read them with `staged_outputs` after `finish`); with `None`,
    /// the compute only (inputs already in place: `upload_inputs`,
    /// `copy_input_from_device`). Then call [`Executor::finish`].
    pub fn begin(&mut self, inputs: Option<&[Tensor]>) -> Result<()> {
        let start = Instant::now();
        if self.io.phase.is_some() {
            return Err(CudaError::Graph("begin called twice without finish".into()));
        }
        self.bind()?;
        while self.io.marks.len() < 4 {
            let e = self.event(CUevent_flags::CU_EVENT_DEFAULT)?;
            self.io.marks.push(e);
        }
        // The host's copy into the staging buffer comes before the first mark, so that
        // the upload's time is the GPU's copy only.
        if let Some(inputs) = inputs {
            self.stage_inputs(inputs)?;
        }
        self.mark(0)?;
        if inputs.is_some() {
            self.enqueue_uploads()?;
        }
        self.mark(1)?;
        self.enqueue()?;
        self.mark(2)?;
        if inputs.is_some() {
            self.stage_outputs()?;
        }
        self.mark(3)?;
        let enqueue_ms = start.elapsed().as_secs_f64() * 1e3;
        self.io.phase = Some(Phase { transfers: inputs.is_some(), enqueue_ms });
        Ok(())
    }

    /// Waits for the last `begin` and returns its phases' times.
    pub fn finish(&mut self) -> Result<PhaseTimes> {
        let phase = self.io.phase.take().ok_or_else(|| CudaError::Graph("finish called without begin".into()))?;
        self.bind()?;
        let m = &self.io.marks;
        m[3].synchronize().map_err(|e| CudaError::driver("running the graph", e))?;
        let ms = |a: usize, b: usize| m[a].elapsed_ms(&m[b]).map_err(|e| CudaError::driver("reading an event", e));
        let compute_ms = ms(1, 2)?;
        let (h2d_ms, d2h_ms) = if phase.transfers { (ms(0, 1)?, ms(2, 3)?) } else { (0.0, 0.0) };
        self.io.staged = phase.transfers;
        Ok(PhaseTimes { h2d_ms, compute_ms, d2h_ms, enqueue_ms: phase.enqueue_ms })
    }

    fn mark(&self, i: usize) -> Result<()> {
        self.io.marks[i].record(&self.stream).map_err(|e| CudaError::driver("recording an event", e))
    }

    fn event(&self, flags: CUevent_flags) -> Result<CudaEvent> {
        self.ctx.new_event(Some(flags)).map_err(|e| CudaError::driver("creating an event", e))
    }

    /// Device address and bytes of each slot of `ids`.
    fn slot_addrs(&self, ids: &[usize]) -> Result<Vec<(u64, usize)>> {
        ids.iter()
            .map(|&id| {
                let s = self.plan.slot(id);
                Ok((self.memory.ptr(s.view)?, s.bytes))
            })
            .collect()
    }

    /// Enqueues a copy of input `index` from device memory the caller owns (`bytes`
    /// bytes at `ptr`, on this executor's GPU, exactly the input's size). The caller
    /// keeps that memory valid and unchanged until the copy has run (stream order).
    /// Shape tensors must come from the host (`upload_inputs`), which checks their value.
    pub fn copy_input_from_device(&mut self, index: usize, ptr: u64, bytes: usize) -> Result<()> {
        let id = *self.plan.inputs.get(index).ok_or_else(|| CudaError::Input {
            name: format!("#{index}"),
            msg: format!("the graph has {} inputs", self.plan.inputs.len()),
        })?;
        let slot = self.plan.slot(id);
        let fail = |msg: String| CudaError::Input { name: slot.name.clone(), msg };
        if self.plan.bound_inputs.get(index).is_some_and(|b| b.is_some()) {
            return Err(fail("is a shape tensor: give it from the host, which checks its value".into()));
        }
        if bytes != slot.bytes {
            return Err(fail(format!(
                "{bytes} bytes given, the input is {}{:?}: {} bytes",
                slot.dtype, slot.shape, slot.bytes
            )));
        }
        let dst = self.memory.ptr(slot.view)?;
        self.io.staged = false;
        self.copy_d2d(dst, ptr, bytes).map_err(|e| fail(e.to_string()))
    }

    /// Enqueues a copy of output `index` into device memory the caller owns (`bytes`
    /// bytes at `ptr`, at least the output's size, on this executor's GPU).
    pub fn copy_output_to_device(&mut self, index: usize, ptr: u64, bytes: usize) -> Result<()> {
        let id = *self.plan.outputs.get(index).ok_or_else(|| CudaError::Output {
            name: format!("#{index}"),
            msg: format!("the graph has {} outputs", self.plan.outputs.len()),
        })?;
        let slot = self.plan.slot(id);
        let fail = |msg: String| CudaError::Output { name: slot.name.clone(), msg };
        if bytes < slot.bytes {
            return Err(fail(format!(
                "{bytes} bytes given, the output is {}{:?}: {} bytes",
                slot.dtype, slot.shape, slot.bytes
            )));
        }
        let src = self.memory.ptr(slot.view)?;
        self.copy_d2d(ptr, src, slot.bytes).map_err(|e| fail(e.to_string()))
    }

    fn copy_d2d(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        if dst == 0 || src == 0 {
            return Err(CudaError::driver("a device copy", "null device address"));
        }
        self.bind()?;
        // SAFETY: one side is the executor's slot of `bytes` bytes (checked); the other is
        // the caller's device memory of at least `bytes` bytes, which the caller keeps
        // valid until the copy has run. A bad address is reported by the driver, it
        // touches no host memory.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| CudaError::driver("copying on the device", e))
    }
}

/// The staging buffer in `slot` for tensors of `sizes` (`(_, bytes)`), allocated on
/// first use.
fn staging<'s>(
    slot: &'s mut Option<Staging>,
    ctx: &std::sync::Arc<cudarc::driver::CudaContext>,
    sizes: &[(u64, usize)],
    what: &str,
) -> Result<&'s mut Staging> {
    if slot.is_none() {
        let (offsets, total) = pack(sizes.iter().map(|s| s.1));
        *slot = Some(Staging { buf: PinnedBuffer::alloc(ctx, total, what)?, offsets });
    }
    slot.as_mut().ok_or_else(|| CudaError::Graph(format!("{what} vanished")))
}
