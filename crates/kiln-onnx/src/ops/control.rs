use kiln_ir::Op;
use kiln_ir::ops::ControlOp;
use kiln_ir::ops::control::Scan;

use crate::error::Result;
use crate::node::NodeCtx;

pub fn convert(ctx: &mut NodeCtx) -> Option<Result<Op>> {
    let op = match ctx.op_type() {
        "If" => if_op(ctx),
        "Loop" => ctx.subgraph("body").map(|body| ControlOp::Loop { body }),
        "Scan" => scan(ctx),
        _ => return None,
    };
    Some(op.map(Op::Control))
}

fn if_op(ctx: &mut NodeCtx) -> Result<ControlOp> {
    let then_branch = ctx.subgraph("then_branch")?;
    let else_branch = ctx.subgraph("else_branch")?;
    Ok(ControlOp::If { then_branch, else_branch })
}

fn scan(ctx: &mut NodeCtx) -> Result<ControlOp> {
    let batched = ctx.opset < 9;
    let m = ctx.req("num_scan_inputs", ctx.int("num_scan_inputs"))?;
    let num_scan_inputs = usize::try_from(m).map_err(|_| ctx.err(format!("num_scan_inputs {m} is negative")))?;
    // Scan-8's first input is sequence_lens.
    let n_formal = ctx.n_inputs().saturating_sub(usize::from(batched));
    let n_states = n_formal.checked_sub(num_scan_inputs).ok_or_else(|| ctx.err("too few inputs"))?;
    let n_scan_outputs = ctx.n_outputs().saturating_sub(n_states);
    let list = |name: &str, len: usize| -> Result<Vec<i64>> {
        let v = ctx.ints(name)?.unwrap_or_else(|| vec![0; len]);
        if v.len() != len {
            return Err(ctx.err(format!("{name} has {} values, expected {len}", v.len())));
        }
        Ok(v)
    };
    let input_axes = list("scan_input_axes", num_scan_inputs)?;
    let directions = if batched { "directions" } else { "scan_input_directions" };
    let input_reverse = list(directions, num_scan_inputs)?.into_iter().map(|d| d != 0).collect();
    let output_axes = list("scan_output_axes", n_scan_outputs)?;
    let output_reverse = list("scan_output_directions", n_scan_outputs)?.into_iter().map(|d| d != 0).collect();
    let body = ctx.subgraph("body")?;
    Ok(ControlOp::Scan(Scan { body, batched, num_scan_inputs, input_axes, input_reverse, output_axes, output_reverse }))
}
