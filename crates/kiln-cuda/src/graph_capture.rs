//! Capturing an executor's launches once into a CUDA graph and replaying it: one
//! driver call per inference instead of one per launch. Every launch reads and writes
//! fixed addresses (the arena, the weights, the workspace), so the captured graph stays
//! valid for every later run; only the input bytes change, copied in before a replay.

use std::sync::Arc;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream};

use crate::{CudaError, Result};

/// Enqueues one launch on a stream. Must not synchronise (it may be captured).
pub type LaunchFn = Box<dyn Fn(&CudaStream) -> Result<()> + Send + Sync>;

/// One launch of a step, named for errors and timings.
pub struct Launch {
    pub node: String,
    pub op: String,
    pub run: LaunchFn,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Launch({} {})", self.op, self.node)
    }
}

impl Launch {
    /// Enqueues the launch; an error names the node and op.
    pub fn enqueue(&self, stream: &CudaStream) -> Result<()> {
        (self.run)(stream).map_err(|e| self.error(e.to_string()))
    }

    pub fn error(&self, msg: String) -> CudaError {
        CudaError::NodeLaunch { node: self.node.clone(), op: self.op.clone(), msg }
    }
}

/// The launches of an executor as one instantiated CUDA graph.
pub struct CapturedGraph {
    /// `None` when there was nothing to launch.
    graph: Option<CudaGraph>,
    launches: usize,
}

// SAFETY: CUDA graph objects are not internally synchronised, so they must not be used
// from two threads at once (not Sync); moving one to another thread is allowed.
unsafe impl Send for CapturedGraph {}

impl std::fmt::Debug for CapturedGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CapturedGraph({} launches)", self.launches)
    }
}

impl CapturedGraph {
    /// Captures `launches` in order on `stream` (which must not be the legacy default
    /// stream: it cannot be captured) and instantiates the graph.
    pub fn capture(stream: &Arc<CudaStream>, launches: &[Launch]) -> Result<CapturedGraph> {
        if launches.is_empty() {
            return Ok(CapturedGraph { graph: None, launches: 0 });
        }
        stream
            .synchronize()
            .and_then(|()| stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL))
            .map_err(|e| CudaError::driver("beginning a CUDA graph capture", e))?;
        for l in launches {
            if let Err(e) = l.enqueue(stream) {
                // End the (now invalid) capture so that the stream is usable again.
                let _ = stream.end_capture(CUgraphInstantiate_flags(0));
                return Err(e);
            }
        }
        let graph = stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(|e| CudaError::driver("ending the CUDA graph capture", e))?;
        if let Some(g) = &graph {
            g.upload().map_err(|e| CudaError::driver("uploading the CUDA graph", e))?;
        }
        Ok(CapturedGraph { graph, launches: launches.len() })
    }

    /// Enqueues one replay of every captured launch.
    pub fn replay(&self) -> Result<()> {
        match &self.graph {
            Some(g) => g.launch().map_err(|e| CudaError::driver("launching the CUDA graph", e)),
            None => Ok(()),
        }
    }

    /// How many launches were captured.
    pub fn len(&self) -> usize {
        self.launches
    }

    pub fn is_empty(&self) -> bool {
        self.launches == 0
    }
}
