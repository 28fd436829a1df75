//! ONNX reductions and normalizations → [`ReduceOp`], with each op's opset history.

use kiln_ir::ops::ReduceOp;
use kiln_ir::ops::reduce::{
    ArgKind, ArgReduce, BatchNorm, GroupAffine, GroupNorm, InstanceNorm, LayerNorm, Loss, LossKind, LossReduction, Lrn,
    MeanVarianceNorm, Reduce, ReduceKind, RmsNorm, Softmax, SoftmaxKind, TopK,
};
use kiln_ir::{DType, Op};

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = match ctx.op_type() {
        "ReduceSum" => reduce(ctx, ReduceKind::Sum),
        "ReduceMean" => reduce(ctx, ReduceKind::Mean),
        "ReduceMax" => reduce(ctx, ReduceKind::Max),
        "ReduceMin" => reduce(ctx, ReduceKind::Min),
        "ReduceProd" => reduce(ctx, ReduceKind::Prod),
        "ReduceL1" => reduce(ctx, ReduceKind::L1),
        "ReduceL2" => reduce(ctx, ReduceKind::L2),
        "ReduceLogSum" => reduce(ctx, ReduceKind::LogSum),
        "ReduceLogSumExp" => reduce(ctx, ReduceKind::LogSumExp),
        "ReduceSumSquare" => reduce(ctx, ReduceKind::SumSquare),
        "ArgMax" => arg(ctx, ArgKind::Max),
        "ArgMin" => arg(ctx, ArgKind::Min),
        "TopK" => topk(ctx),
        "Softmax" => softmax(ctx, SoftmaxKind::Softmax),
        "LogSoftmax" => softmax(ctx, SoftmaxKind::LogSoftmax),
        "Hardmax" => softmax(ctx, SoftmaxKind::Hardmax),
        "BatchNormalization" => batch_norm(ctx),
        "InstanceNormalization" => {
            ctx.float_or("epsilon", 1e-5).map(|epsilon| ReduceOp::InstanceNorm(InstanceNorm { epsilon }))
        }
        "LayerNormalization" => layer_norm(ctx),
        "GroupNormalization" => group_norm(ctx),
        "RMSNormalization" => rms_norm(ctx),
        "LRN" => lrn(ctx),
        "NegativeLogLikelihoodLoss" => loss(ctx, LossKind::NegativeLogLikelihood),
        "SoftmaxCrossEntropyLoss" => loss(ctx, LossKind::SoftmaxCrossEntropy),
        "MeanVarianceNormalization" => ctx
            .ints("axes")
            .map(|a| ReduceOp::MeanVarianceNorm(MeanVarianceNorm { axes: a.unwrap_or_else(|| vec![0, 2, 3]) })),
        _ => return None,
    };
    Some(op.map(Op::Reduce))
}

fn reduce(ctx: &NodeCtx, kind: ReduceKind) -> Result<ReduceOp> {
    // The axes moved from an attribute to input 1 at opset 13 (ReduceSum) or 18 (the others).
    let axes_input_from = if kind == ReduceKind::Sum { 13 } else { 18 };
    let axes = if ctx.opset < axes_input_from { ctx.ints("axes")?.or(Some(vec![])) } else { None };
    Ok(ReduceOp::Reduce(Reduce {
        kind,
        axes,
        keepdims: ctx.bool_or("keepdims", true)?,
        noop_with_empty_axes: ctx.bool_or("noop_with_empty_axes", false)?,
    }))
}

fn arg(ctx: &NodeCtx, kind: ArgKind) -> Result<ReduceOp> {
    Ok(ReduceOp::Arg(ArgReduce {
        kind,
        axis: ctx.int_or("axis", 0)?,
        keepdims: ctx.bool_or("keepdims", true)?,
        select_last_index: ctx.bool_or("select_last_index", false)?,
    }))
}

fn topk(ctx: &NodeCtx) -> Result<ReduceOp> {
    let k = if ctx.opset < 10 { Some(ctx.req("k", ctx.int("k"))?) } else { None };
    Ok(ReduceOp::TopK(TopK {
        axis: ctx.int_or("axis", -1)?,
        largest: ctx.bool_or("largest", true)?,
        sorted: ctx.bool_or("sorted", true)?,
        k,
    }))
}

fn softmax(ctx: &NodeCtx, kind: SoftmaxKind) -> Result<ReduceOp> {
    let coerce_2d = ctx.opset < 13;
    let axis = ctx.int_or("axis", if coerce_2d { 1 } else { -1 })?;
    Ok(ReduceOp::Softmax(Softmax { kind, axis, coerce_2d }))
}

fn batch_norm(ctx: &NodeCtx) -> Result<ReduceOp> {
    // Training mode: an attribute from opset 14; before, implied by asking for the
    // running statistics as extra outputs (and, before 7, by is_test = 0).
    let training = if ctx.opset >= 14 {
        ctx.bool_or("training_mode", false)?
    } else {
        ctx.n_outputs() > 1 && !ctx.bool_or("is_test", false)?
    };
    if training && !ctx.bool_or("spatial", true)? {
        return Err(ctx.err("training mode with spatial = 0 is not supported"));
    }
    Ok(ReduceOp::BatchNorm(BatchNorm {
        epsilon: ctx.float_or("epsilon", 1e-5)?,
        momentum: ctx.float_or("momentum", 0.9)?,
        training,
    }))
}

fn stash_type(ctx: &NodeCtx) -> Result<DType> {
    match ctx.dtype("stash_type")? {
        None => Ok(DType::F32),
        Some(d @ (DType::F32 | DType::F64 | DType::F16 | DType::BF16)) => Ok(d),
        Some(d) => Err(ctx.err(format!("stash_type {d} is not supported (expected a float type)"))),
    }
}

fn layer_norm(ctx: &NodeCtx) -> Result<ReduceOp> {
    Ok(ReduceOp::LayerNorm(LayerNorm {
        axis: ctx.int_or("axis", -1)?,
        epsilon: ctx.float_or("epsilon", 1e-5)?,
        stash_type: stash_type(ctx)?,
    }))
}

fn group_norm(ctx: &NodeCtx) -> Result<ReduceOp> {
    let num_groups = ctx.req("num_groups", ctx.int("num_groups"))?;
    if num_groups <= 0 {
        return Err(ctx.err(format!("num_groups must be positive, got {num_groups}")));
    }
    Ok(ReduceOp::GroupNorm(GroupNorm {
        num_groups,
        epsilon: ctx.float_or("epsilon", 1e-5)?,
        stash_type: stash_type(ctx)?,
        // Opset 18 scales and shifts per group; opset 21 per channel.
        affine: if ctx.opset < 21 { GroupAffine::PerGroup } else { GroupAffine::PerChannel },
    }))
}

fn rms_norm(ctx: &NodeCtx) -> Result<ReduceOp> {
    Ok(ReduceOp::RmsNorm(RmsNorm {
        axis: ctx.int_or("axis", -1)?,
        epsilon: ctx.float_or("epsilon", 1e-5)?,
        stash_type: stash_type(ctx)?,
    }))
}

fn lrn(ctx: &NodeCtx) -> Result<ReduceOp> {
    let size = ctx.req("size", ctx.int("size"))?;
    if size <= 0 {
        return Err(ctx.err(format!("size must be positive, got {size}")));
    }
    Ok(ReduceOp::Lrn(Lrn {
        size,
        alpha: ctx.float_or("alpha", 1e-4)?,
        beta: ctx.float_or("beta", 0.75)?,
        bias: ctx.float_or("bias", 1.0)?,
    }))
}

fn loss(ctx: &NodeCtx, kind: LossKind) -> Result<ReduceOp> {
    let reduction = match ctx.string_or("reduction", "mean")?.as_str() {
        "none" => LossReduction::None,
        "sum" => LossReduction::Sum,
        "mean" => LossReduction::Mean,
        other => return Err(ctx.err(format!("reduction '{other}' is not one of none, sum, mean"))),
    };
    Ok(ReduceOp::Loss(Loss { kind, reduction, ignore_index: ctx.int("ignore_index")? }))
}
