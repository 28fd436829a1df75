//! Turning an imported graph into what a backend runs: optimisation (with the CPU
//! backend folding constants) and, for CUDA, binding to concrete input shapes and
//! lowering the precision.

use kiln_cuda::bind::{ValueBinding, bind_inputs, fully_known};
use kiln_ir::{DType, Graph, Tensor};

use crate::meta::PrecisionFlags;
use crate::{EngineError, Result};

/// Activation layout of convolution regions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// The model's own layout.
    #[default]
    Nchw,
    /// Channels last.
    Nhwc,
}

/// The CPU backend as the optimiser's constant evaluator.
fn cpu_eval(op: &kiln_ir::Op, inputs: &[Option<Tensor>], n: usize) -> std::result::Result<Vec<Tensor>, String> {
    kiln_cpu::eval_op(op, inputs, n, &kiln_cpu::EvalContext::default()).map_err(|e| e.to_string())
}

/// `graph` optimised at `level` (0: only dead nodes dropped), with the CPU backend
/// folding constants.
pub fn optimize(
    graph: &Graph,
    level: u8,
    layout: Layout,
) -> std::result::Result<(Graph, kiln_opt::Report), kiln_opt::OptError> {
    let eval = cpu_eval;
    let layout = match layout {
        Layout::Nchw => kiln_opt::Layout::Nchw,
        Layout::Nhwc => kiln_opt::Layout::Nhwc,
    };
    let options = kiln_opt::Options { evaluator: Some(&eval), layout, ..kiln_opt::Options::default() };
    kiln_opt::Optimizer::new(level).with_options(options).optimize(graph)
}

/// What the CUDA backend runs for `inputs`: `graph` bound to their shapes (and to the
/// values of its shape tensors), optimised again where that determined something, in
/// the requested precision. Its shapes may still depend on data (see
/// [`needs_segments`]).
pub fn build_for_cuda(graph: &Graph, inputs: &[Tensor], precision: PrecisionFlags, level: u8) -> Result<Graph> {
    let bound = bind_for_cuda(graph, inputs, level.max(1))?;
    let half = match (precision.fp16, precision.bf16) {
        (true, _) => DType::F16,
        (_, true) => DType::BF16,
        _ => return Ok(bound),
    };
    kiln_cuda::precision::reduce_precision(&bound, half)
        .map_err(|e| EngineError::Unsupported(format!("{}: {e}", precision.name())))
}

/// Data-dependent shapes or control flow: the graph runs in segments
/// (`kiln_cuda::dynamic`).
pub fn needs_segments(built: &Graph) -> bool {
    !fully_known(built) || kiln_cuda::dynamic::has_control(built)
}

/// `graph` bound to the inputs' shapes and shape-tensor values; where a value was bound
/// or shapes were unknown, optimised again at `level` so that what the bound shapes and
/// values determine becomes constant. When shapes stay unknown, small inputs are bound
/// by value too.
fn bind_for_cuda(graph: &Graph, inputs: &[Tensor], level: u8) -> Result<Graph> {
    let symbolic = !fully_known(graph);
    let bound = bind_inputs(graph, inputs, ValueBinding::ShapeTensors)?;
    let bound = simplify_bound(bound, symbolic, level)?;
    if fully_known(&bound) {
        return Ok(bound);
    }
    simplify_bound(bind_inputs(graph, inputs, ValueBinding::SmallInputs)?, true, level)
}

/// Optimises a bound graph again when binding changed something (`symbolic`: the graph
/// had unknown dims or values before).
fn simplify_bound(bound: Graph, symbolic: bool, level: u8) -> Result<Graph> {
    let any_value = bound.inputs.iter().any(|&o| bound.outlet(o).is_ok_and(|v| v.fact.value.is_some()));
    if !any_value && !symbolic {
        return Ok(bound);
    }
    optimize(&bound, level, Layout::Nchw)
        .map(|(g, _)| g)
        .map_err(|e| EngineError::Build(format!("simplifying after binding shape tensors: {e}")))
}
