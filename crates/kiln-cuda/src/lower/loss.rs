//! NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (`kernels/loss.cu`): for the
//! latter a log-softmax over axis 1 into its second output (or a temporary), then the
//! weighted negative log-likelihood, reduced in one block for sum and mean (mean
//! divides by the sum of the weights applied, as kiln-cpu does).

use kiln_ir::DType;
use kiln_ir::ops::reduce::{Loss, LossKind, LossReduction};

use super::index::slot;
use super::{Cx, Lowered};
use crate::executor::Kernel;
use crate::kernels::LOSS;
use crate::launch::call::{Arg, Call, Grid};

pub(crate) fn lower(cx: &mut Cx, l: &Loss) -> Lowered {
    let (x, target) = (cx.input(0)?, cx.input(1)?);
    let weight = cx.opt_input(2);
    let y = cx.output(0)?;
    let xs = cx.shape(x);
    let dtype = cx.dtype(x);
    let sfx = match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        d => return Err(format!("dtype {d}")),
    };
    if xs.len() < 2 {
        return Err(format!("input of shape {xs:?} (at least [N, C])"));
    }
    let (n, c) = (xs[0], xs[1]);
    let d: usize = xs[2..].iter().product();
    let mut ts = vec![n];
    ts.extend(&xs[2..]);
    if cx.shape(target) != ts {
        return Err(format!("target {:?}, expected {ts:?}", cx.shape(target)));
    }
    let t64 = match cx.dtype(target) {
        DType::I64 => 1,
        DType::I32 => 0,
        t => return Err(format!("target of dtype {t}")),
    };
    if let Some(w) = weight
        && (cx.len(w) != c || cx.dtype(w) != dtype)
    {
        return Err(format!("weight {}{:?} for {c} classes", cx.dtype(w), cx.shape(w)));
    }
    let reduction = match l.reduction {
        LossReduction::None => 0,
        LossReduction::Sum => 1,
        LossReduction::Mean => 2,
    };
    let want = if reduction == 0 { n * d } else { 1 };
    if cx.len(y) != want || cx.dtype(y) != dtype {
        return Err(format!("output {}{:?}", cx.dtype(y), cx.shape(y)));
    }
    let mut ks = Vec::new();
    let logp = match l.kind {
        LossKind::NegativeLogLikelihood => x,
        LossKind::SoftmaxCrossEntropy => {
            let lp = match cx.step.outputs.get(1) {
                Some(&o) if cx.shape(o) == xs && cx.dtype(o) == dtype => o,
                Some(_) => return Err("log_prob output of another shape".into()),
                None => cx.temp(dtype, &xs),
            };
            let args = vec![slot(cx, x), slot(cx, lp), Arg::I64(n as i64), Arg::I64(c as i64), Arg::I64(d as i64)];
            ks.push(Kernel::Call(Call {
                module: LOSS.name,
                function: format!("kiln_log_softmax_axis1_{sfx}"),
                args,
                grid: Grid::Items(n * d),
            }));
            lp
        }
    };
    if cx.step.outputs.len() > 1 && l.kind == LossKind::NegativeLogLikelihood {
        return Err(format!("{} outputs", cx.step.outputs.len()));
    }
    let args = vec![
        slot(cx, logp),
        slot(cx, target),
        Arg::I32(t64),
        weight.map_or(Arg::Null, |w| slot(cx, w)),
        slot(cx, y),
        Arg::I64((n * d) as i64),
        Arg::I64(c as i64),
        Arg::I64(d.max(1) as i64),
        Arg::I64(l.ignore_index.unwrap_or(0)),
        Arg::I32(i32::from(l.ignore_index.is_some())),
        Arg::I32(reduction),
        Arg::Null,
    ];
    let grid = if reduction == 0 { Grid::Items(n * d) } else { Grid::OneBlock };
    ks.push(Kernel::Call(Call { module: LOSS.name, function: format!("kiln_nll_{sfx}"), args, grid }));
    Ok(ks)
}
