//! Choosing each cuBLASLt product's and cuDNN convolution's algorithm when an executor is
//! built: forced by `Options::tactics` (a plan file), found in the timing cache, timed on
//! the GPU (`Options::autotune`), or the heuristic's first (that fits the workspace).
//!
//! Timing runs the candidates on the executor's own buffers (the arena's contents are
//! undefined before a run, so nothing is lost) with a scratch workspace, on the
//! executor's stream, between CUDA events: a few warm-up runs, then the median of timed
//! runs. A candidate that fails to launch is skipped.

use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};

use crate::blas::MatmulPlan;
use crate::dnn::{ConvAlgoId, ConvPlan, Dnn};
use crate::executor::Options;
use crate::launch::Buf;
use crate::memory::DeviceBuffer;
use crate::tactics::{TimingCache, TimingEntry, forced_choice, median};
use crate::{CudaError, Device, Result};

const WARMUP: usize = 2;
const REPS: usize = 5;

/// A choice: the candidate's index and its time when measured (now or in the cache).
pub(crate) type Choice = (usize, Option<f32>);

/// A convolution's operands, as device addresses and sizes.
pub(crate) struct ConvOperands {
    pub x: (u64, usize),
    pub w: (u64, usize),
    pub bias: Option<(u64, usize)>,
    pub y: (u64, usize),
}

pub(crate) struct Tuner<'a> {
    ctx: &'a Arc<CudaContext>,
    stream: &'a Arc<CudaStream>,
    options: &'a Options,
    limit: usize,
    /// GPU, compute capability and library versions: the start of every cache key.
    prefix: String,
    /// Scratch workspace for timing, grown as needed.
    ws: Option<DeviceBuffer>,
}

impl<'a> Tuner<'a> {
    pub fn new(dev: &'a Device, stream: &'a Arc<CudaStream>, options: &'a Options, limit: usize) -> Result<Tuner<'a>> {
        // The versions are only needed for cache keys, i.e. when tuning.
        let prefix = if options.autotune {
            let v = crate::libs::lib_versions()?;
            format!(
                "{}|{}|driver {}|cublasLt {}|cudnn {}",
                dev.name,
                dev.arch(),
                v.driver,
                v.cublaslt.unwrap_or(0),
                v.cudnn.unwrap_or(0)
            )
        } else {
            String::new()
        };
        Ok(Tuner { ctx: &dev.ctx, stream, options, limit, prefix, ws: None })
    }

    /// Whether candidates are timed (`Options::autotune`).
    pub fn autotunes(&self) -> bool {
        self.options.autotune
    }

    pub fn ctx(&self) -> Arc<CudaContext> {
        self.ctx.clone()
    }

    /// The most workspace an algorithm may use.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn max_blas_algos(&self) -> usize {
        self.options.max_blas_algos
    }

    pub fn allow_tf32(&self) -> bool {
        self.options.allow_tf32
    }

    /// Chooses `p`'s algorithm for launch `launch` of `node`.
    pub fn matmul(&mut self, p: &mut MatmulPlan, launch: usize, node: &str) -> Result<Choice> {
        let n = p.algos().len();
        let (choice, time) = match forced_choice(self.options.tactics.as_deref(), launch, node, n)? {
            Some(i) => (i, None),
            None if self.options.autotune => {
                let key = format!(
                    "{}|matmul|{:?}|align {:?}|ws {}|algos {}",
                    self.prefix,
                    p.shape(),
                    p.alignments(),
                    self.limit,
                    self.options.max_blas_algos
                );
                let need = p.algos().iter().map(|a| a.workspace_bytes).max().unwrap_or(0);
                self.cached_or_timed(&key, n, (0..n).collect(), need, |ws, stream, i| {
                    p.choose(i)?;
                    // SAFETY: the plan's operands are the executor's buffers, alive
                    // now; `ws` holds at least every candidate's workspace.
                    unsafe { p.run(stream, ws.0, ws.1) }
                })?
                .unwrap_or((0, None))
            }
            None => (0, None),
        };
        p.choose(choice)?;
        Ok((choice, time))
    }

    /// Chooses `p`'s algorithm for launch `launch` of `node`.
    pub fn conv(
        &mut self,
        dnn: &Dnn,
        p: &mut ConvPlan,
        ops: Option<&ConvOperands>,
        launch: usize,
        node: &str,
    ) -> Result<Choice> {
        let n = p.algos().len();
        if let Some(i) = forced_choice(self.options.tactics.as_deref(), launch, node, n)? {
            p.choose(i)?;
            return Ok((i, None));
        }
        let fitting = p.choose_fitting(self.limit)?;
        // Without operands to run on (see `conv_operands`), the heuristic's choice.
        let Some(ops) = ops.filter(|_| self.options.autotune) else { return Ok((fitting, None)) };
        let key = format!(
            "{}|conv|{:?}|{}|tf32 {}|ws {}",
            self.prefix,
            p.geometry(),
            p.dtype(),
            self.options.allow_tf32,
            self.limit
        );
        let fits: Vec<usize> = (0..n).filter(|&i| p.algos()[i].workspace_bytes <= self.limit).collect();
        let need = fits.iter().map(|&i| p.algos()[i].workspace_bytes).max().unwrap_or(0);
        // SAFETY (for the closure's buffers): the operands are the executor's buffers,
        // alive while it is built.
        let buf = |(a, b): (u64, usize)| unsafe { Buf::from_raw(a, b) };
        let found = self.cached_or_timed(&key, n, fits, need, |ws, stream, i| {
            p.choose(i)?;
            dnn.run_conv(stream, p, buf(ops.x), buf(ops.w), ops.bias.map(buf), buf(ops.y), buf(ws))
        })?;
        let (choice, time) = found.unwrap_or((fitting, None));
        p.choose(choice)?;
        Ok((choice, time))
    }

    /// The cache's entry for `key`, else the fastest of `candidates` (indices out of
    /// `n`) timed with `run(workspace, stream, i)`, recorded in the cache; `None` when
    /// no candidate ran.
    fn cached_or_timed(
        &mut self,
        key: &str,
        n: usize,
        candidates: Vec<usize>,
        ws_bytes: usize,
        mut run: impl FnMut((u64, usize), &CudaStream, usize) -> Result<()>,
    ) -> Result<Option<Choice>> {
        let cache = self.options.timing_cache.as_ref();
        // The cache is locked only briefly: other executors may be tuning on other threads.
        if let Some(e) = cache.and_then(|c| lock(c).lookup(key, n)) {
            return Ok(Some((e.choice, Some(e.time_ms))));
        }
        let ws = self.workspace(ws_bytes)?;
        let events = self.events()?;
        let mut best: Option<(usize, f32)> = None;
        for i in candidates {
            let Some(t) = time_candidate(self.stream, &events, &mut || run(ws, self.stream, i))? else { continue };
            if best.is_none_or(|(_, b)| t < b) {
                best = Some((i, t));
            }
        }
        let Some((choice, time_ms)) = best else { return Ok(None) };
        if let Some(c) = cache {
            lock(c).insert(key.to_string(), TimingEntry { choice, candidates: n, time_ms });
        }
        Ok(Some((choice, Some(time_ms))))
    }

    /// A scratch workspace of at least `bytes` bytes, as (address, size).
    fn workspace(&mut self, bytes: usize) -> Result<(u64, usize)> {
        if self.ws.as_ref().is_none_or(|w| w.bytes() < bytes) {
            self.ws = None;
            self.ws = Some(DeviceBuffer::alloc(self.ctx, bytes, "the auto-tuning workspace")?);
        }
        Ok(self.ws.as_ref().map(|w| (w.ptr(), w.bytes())).unwrap_or((0, 0)))
    }

    fn events(&self) -> Result<Vec<CudaEvent>> {
        (0..=REPS)
            .map(|_| {
                self.ctx
                    .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| CudaError::driver("creating an event", e))
            })
            .collect()
    }
}

fn lock(c: &Mutex<TimingCache>) -> MutexGuard<'_, TimingCache> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// The median time of `run` over `REPS` runs after `WARMUP`; `None` if it fails to launch.
fn time_candidate(
    stream: &CudaStream,
    events: &[CudaEvent],
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<Option<f32>> {
    for _ in 0..WARMUP {
        if run().is_err() {
            return Ok(None);
        }
    }
    let rec = |e: &CudaEvent| e.record(stream).map_err(|e| CudaError::driver("recording an event", e));
    rec(&events[0])?;
    for e in &events[1..=REPS] {
        if run().is_err() {
            return Ok(None);
        }
        rec(e)?;
    }
    events[REPS].synchronize().map_err(|e| CudaError::driver("timing a candidate", e))?;
    let mut times = Vec::with_capacity(REPS);
    for w in events[..=REPS].windows(2) {
        times.push(w[0].elapsed_ms(&w[1]).map_err(|e| CudaError::driver("reading an event", e))?);
    }
    Ok(Some(median(&mut times)))
}

/// A readable name of a cuDNN algorithm: `IMPLICIT_PRECOMP_GEMM`, `bwd-data FFT`.
pub(crate) fn conv_algo_name(id: ConvAlgoId) -> String {
    match id {
        ConvAlgoId::Forward(a) => format!("{a:?}").trim_start_matches("CUDNN_CONVOLUTION_FWD_ALGO_").to_string(),
        ConvAlgoId::BackwardData(a) => {
            format!("bwd-data {}", format!("{a:?}").trim_start_matches("CUDNN_CONVOLUTION_BWD_DATA_ALGO_"))
        }
    }
}
