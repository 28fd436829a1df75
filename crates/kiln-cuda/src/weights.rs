//! Weights shared between executors: one device copy of a model's constants for every
//! execution context of an engine.
//!
//! Design. Constants are identified by their *host bytes*: the address and length of the
//! `bytes::Bytes` holding them. The store keeps a clone of each `Bytes` it uploaded, so
//! that memory can be neither freed nor reused while the entry exists, and `Bytes` is
//! immutable: equal (address, length) therefore means equal contents, without hashing
//! gigabytes. This covers the engine's case exactly: a graph re-bound to other input
//! shapes shares its big constants' `Bytes` with the original.
//!
//! - A constant of at least [`LARGE_WEIGHT_BYTES`] gets its own device buffer, keyed by
//!   its host bytes: executors of any graph holding those bytes use that buffer.
//! - The smaller ones are packed into one buffer per distinct list of host bytes (the
//!   plan's order): executors of the same graph share it; a re-bound graph whose small
//!   constants differ (folded shape values) gets its own small pack. One allocation per
//!   small constant would waste memory and allocation calls for little gain.
//!
//! Entries live as long as the store (an engine's lifetime); nothing is evicted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaStream};
use kiln_ir::tensor::Bytes;
use kiln_ir::{Graph, Op};

use crate::memory::{DeviceBuffer, WeightPlace};
use crate::plan::ExecutionPlan;
use crate::planner::ALIGN;
use crate::{CudaError, Result};

/// Constants of at least this many bytes get their own shared device buffer.
pub const LARGE_WEIGHT_BYTES: usize = 64 << 10;

/// A constant's host bytes as a key: (address, length).
type HostKey = (usize, usize);

fn host_key(b: &Bytes) -> HostKey {
    (b.as_ptr() as usize, b.len())
}

/// Device copies of constants, shared by the executors built through it (see the module
/// comment). One store is for one CUDA context.
#[derive(Default)]
pub struct WeightStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ctx: Option<Arc<CudaContext>>,
    /// Large constants: the host bytes (kept alive: see the module comment) and their buffer.
    large: HashMap<HostKey, (Bytes, Arc<DeviceBuffer>)>,
    /// Packs of small constants by their host bytes in order.
    packs: HashMap<Vec<HostKey>, Pack>,
}

struct Pack {
    _host: Vec<Bytes>,
    buffer: Arc<DeviceBuffer>,
    /// Each constant's offset in `buffer`, in the key's order.
    offsets: Vec<usize>,
}

/// Where an executor's constants are: the small pack, the large buffers and every
/// constant's place.
pub(crate) struct PlacedWeights {
    pub pack: Arc<DeviceBuffer>,
    pub large: Vec<Arc<DeviceBuffer>>,
    pub places: Vec<WeightPlace>,
}

impl std::fmt::Debug for WeightStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightStore({} buffers, {} bytes)", self.buffers(), self.device_bytes())
    }
}

impl WeightStore {
    pub fn new() -> Arc<WeightStore> {
        Arc::new(WeightStore::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Device bytes held by the store (each shared buffer once).
    pub fn device_bytes(&self) -> usize {
        let inner = self.lock();
        inner.large.values().map(|(_, b)| b.bytes()).sum::<usize>()
            + inner.packs.values().map(|p| p.buffer.bytes()).sum::<usize>()
    }

    /// How many device allocations the store holds (an empty pack allocates nothing).
    pub fn buffers(&self) -> usize {
        let inner = self.lock();
        inner.large.len() + inner.packs.values().filter(|p| p.buffer.bytes() > 0).count()
    }

    /// The device places of `plan`'s constants (nodes of `graph`), uploading on `stream`
    /// those not in the store yet.
    pub(crate) fn place(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &CudaStream,
        plan: &ExecutionPlan,
        graph: &Graph,
    ) -> Result<PlacedWeights> {
        let mut inner = self.lock();
        match &inner.ctx {
            // The same driver context (devices opened twice share the primary context).
            Some(c) if c.cu_ctx() != ctx.cu_ctx() => {
                return Err(CudaError::Graph(format!(
                    "a weight store is for one GPU context (GPU {}); this executor is on GPU {}",
                    c.ordinal(),
                    ctx.ordinal()
                )));
            }
            Some(_) => {}
            None => inner.ctx = Some(ctx.clone()),
        }
        let mut small = Vec::new();
        let mut places = Vec::with_capacity(plan.weights.len());
        let mut large = Vec::new();
        for w in &plan.weights {
            let Op::Constant(t) = &graph.nodes[w.node].op else {
                return Err(CudaError::Graph(format!("weight '{}' is not a constant", plan.slot(w.slot).name)));
            };
            let bytes = t.bytes();
            if bytes.len() < LARGE_WEIGHT_BYTES {
                small.push((w.offset, bytes.clone()));
                continue;
            }
            let buf = inner.large_buffer(ctx, stream, bytes, &plan.slot(w.slot).name)?;
            places.push(WeightPlace { plan_offset: w.offset, bytes: bytes.len(), addr: buf.ptr() });
            large.push(buf);
        }
        let pack = inner.pack(ctx, stream, &small)?;
        for ((plan_offset, b), off) in small.iter().zip(&pack.offsets) {
            places.push(WeightPlace {
                plan_offset: *plan_offset,
                bytes: b.len(),
                addr: pack.buffer.ptr() + *off as u64,
            });
        }
        places.sort_by_key(|p| p.plan_offset);
        Ok(PlacedWeights { pack: pack.buffer.clone(), large, places })
    }
}

impl Inner {
    /// The buffer of one large constant, uploaded on first use.
    fn large_buffer(
        &mut self,
        ctx: &Arc<CudaContext>,
        stream: &CudaStream,
        bytes: &Bytes,
        name: &str,
    ) -> Result<Arc<DeviceBuffer>> {
        let key = host_key(bytes);
        if let Some((_, b)) = self.large.get(&key) {
            return Ok(b.clone());
        }
        let buf = DeviceBuffer::alloc(ctx, bytes.len(), &format!("weight '{name}'"))?;
        buf.upload(stream, 0, bytes)?;
        let buf = Arc::new(buf);
        self.large.insert(key, (bytes.clone(), buf.clone()));
        Ok(buf)
    }

    /// The pack of these small constants (`(plan offset, bytes)`), uploaded on first use.
    fn pack(&mut self, ctx: &Arc<CudaContext>, stream: &CudaStream, small: &[(usize, Bytes)]) -> Result<&Pack> {
        let key: Vec<HostKey> = small.iter().map(|(_, b)| host_key(b)).collect();
        if !self.packs.contains_key(&key) {
            let mut offsets = Vec::with_capacity(small.len());
            let mut end = 0usize;
            for (_, b) in small {
                offsets.push(end);
                end = (end + b.len()).next_multiple_of(ALIGN);
            }
            let buffer = DeviceBuffer::alloc(ctx, end, "the small weights")?;
            for ((_, b), off) in small.iter().zip(&offsets) {
                buffer.upload(stream, *off, b)?;
            }
            let host = small.iter().map(|(_, b)| b.clone()).collect();
            self.packs.insert(key.clone(), Pack { _host: host, buffer: Arc::new(buffer), offsets });
        }
        self.packs.get(&key).ok_or_else(|| CudaError::Graph("a weight pack vanished".into()))
    }
}
