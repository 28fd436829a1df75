//! Lowering helpers per op family: each turns one plan step into [`Kernel`]s on the
//! host, checking dtypes, shapes and constant operands so that anything the kernels
//! cannot run is an `UnsupportedNode` error when the executor is built.
//!
//! - `elementwise`: unary maps, binary/compare/logic ops, Where, Cast, Clip, Dropout.
//! - `movement`: Transpose, Slice, Concat, Split, Expand, Tile, Gather, Pad.
//! - `reduce`: Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax, Layer/RMS normalisation.
//! - `misc`: Trilu, EyeLike, ReverseSequence, CumSum/CumProd, Hardmax.
//! - `fused`: kiln-opt's fused elementwise expressions and layer epilogues, evaluated
//!   node by node with temporaries in the workspace.

use kiln_ir::{DType, Tensor};

use crate::CudaError;
use crate::executor::{CopySpec, Kernel};
use crate::plan::{ExecutionPlan, Slot, SlotId, Step};
use crate::planner::ALIGN;

pub mod attention;
pub mod convpool;
pub mod einsum;
pub mod elementwise;
pub mod fused;
pub mod index;
pub mod loss;
pub mod misc;
pub mod movement;
pub mod quant;
pub mod recurrent;
pub mod reduce;
pub mod sample;

pub(crate) type Lowered = std::result::Result<Vec<Kernel>, String>;

/// What lowering one step sees: the plan, the step, and the temporaries it made.
pub(crate) struct Cx<'a> {
    pub plan: &'a ExecutionPlan,
    pub step: &'a Step,
    /// Temporaries of every step so far; slot ids continue after the plan's.
    pub temps: &'a mut Vec<Slot>,
    /// Bytes of the workspace this step's temporaries use so far.
    pub temp_bytes: usize,
}

impl Cx<'_> {
    pub fn slot(&self, id: SlotId) -> &Slot {
        let n = self.plan.slots.len();
        if id < n { &self.plan.slots[id] } else { &self.temps[id - n] }
    }

    pub fn shape(&self, id: SlotId) -> Vec<usize> {
        self.slot(id).shape.clone()
    }

    pub fn dtype(&self, id: SlotId) -> DType {
        self.slot(id).dtype
    }

    pub fn len(&self, id: SlotId) -> usize {
        self.slot(id).len()
    }

    /// Data input `i` (present).
    pub fn input(&self, i: usize) -> std::result::Result<SlotId, String> {
        self.step.inputs.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
    }

    /// Input `i` if given.
    pub fn opt_input(&self, i: usize) -> Option<SlotId> {
        self.step.inputs.get(i).copied().flatten()
    }

    pub fn output(&self, i: usize) -> std::result::Result<SlotId, String> {
        self.step.outputs.get(i).copied().ok_or_else(|| format!("output {i} is missing"))
    }

    /// The only output the kernels write (further outputs must be absent).
    pub fn single_output(&self) -> std::result::Result<SlotId, String> {
        match self.step.outputs.as_slice() {
            [y] => Ok(*y),
            o => Err(format!("{} outputs (one expected)", o.len())),
        }
    }

    /// The value of input `i` when it is a constant.
    pub fn constant(&self, i: usize) -> Option<&Tensor> {
        self.opt_input(i).and_then(|s| self.plan.constant(s))
    }

    /// Input `i` as integers read on the host (it must be a constant).
    pub fn const_ints(&self, i: usize, what: &str) -> std::result::Result<Vec<i64>, String> {
        let t = self.constant(i).ok_or_else(|| format!("{what} (input {i}) is not a constant"))?;
        t.to_i64_vec().map_err(|e| format!("{what}: {e}"))
    }

    /// A new temporary of `dtype` and `shape` in the workspace (valid for this step).
    pub fn temp(&mut self, dtype: DType, shape: &[usize]) -> SlotId {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let id = self.plan.slots.len() + self.temps.len();
        let offset = self.temp_bytes;
        self.temp_bytes += bytes.div_ceil(ALIGN).max(1) * ALIGN;
        let outlet = self
            .step
            .outputs
            .first()
            .map_or(kiln_ir::OutletId::new(self.step.node_id, 0), |&o| self.plan.slot(o).outlet);
        self.temps.push(Slot {
            name: format!("{}/tmp{}", self.step.node, self.temps.len()),
            outlet,
            dtype,
            shape: shape.to_vec(),
            bytes,
            view: crate::memory::View { buffer: crate::memory::BufferKind::Workspace, offset, bytes },
            root: id,
        });
        id
    }

    /// A contiguous copy of `x` into `y` (same element count).
    pub fn copy_all(&self, x: SlotId, y: SlotId) -> Kernel {
        let n = self.len(y);
        Kernel::Copy {
            dtype: self.dtype(y),
            src: x,
            dst: y,
            copy: CopySpec { dims: vec![n], src_offset: 0, src_strides: vec![1], dst_offset: 0, dst_strides: vec![1] },
        }
    }
}

/// The dtypes the float kernels take.
pub fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16)
}

/// The dtypes the numeric (arithmetic) kernels take.
pub fn is_numeric(d: DType) -> bool {
    is_float(d) || matches!(d, DType::I32 | DType::I64)
}

/// The dtypes the storage kernels (copies, Where, Gather, Pad) take.
pub fn is_storage(d: DType) -> bool {
    matches!(d.size(), 1 | 2 | 4 | 8)
}

pub fn contiguous(shape: &[usize]) -> Vec<isize> {
    let mut s = vec![1isize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as isize;
    }
    s
}

/// `axis` normalised against `rank` (negative counts from the end).
pub fn axis(a: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let n = if a < 0 { a + r } else { a };
    if (0..r).contains(&n) { Ok(n as usize) } else { Err(format!("axis {a} for rank {rank}")) }
}

/// Wraps `CudaError::UnsupportedNode` around a lowering reason.
pub(crate) fn unsupported(step: &Step, reason: String) -> CudaError {
    CudaError::UnsupportedNode { node: step.node.clone(), op: step.op.name().to_string(), reason }
}
