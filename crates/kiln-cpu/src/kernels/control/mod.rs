//! If, Loop and Scan: run nested graphs through the executor. Tensors are sliced and
//! stacked by raw bytes (`bytes`), so every dtype works.

mod bytes;

use std::collections::HashMap;

use kiln_ir::ops::control::Scan;
use kiln_ir::ops::{ControlOp, OpFamily};
use kiln_ir::{DType, Graph, Tensor};

use crate::{CpuError, EvalContext, Result};

pub fn eval(op: &ControlOp, inputs: &[Option<Tensor>], n_outputs: usize, ctx: &EvalContext) -> Result<Vec<Tensor>> {
    let name = op.name();
    let (formal, caps) = ctx.split_captures(&op.subgraphs(), inputs)?;
    match op {
        ControlOp::If { then_branch, else_branch } => {
            let cond = scalar_bool(formal.first().and_then(Option::as_ref), name)?;
            ctx.run_graph(if cond { then_branch } else { else_branch }, &[], &caps)
        }
        ControlOp::Loop { body } => run_loop(body, &formal, n_outputs, &caps, ctx, name),
        ControlOp::Scan(s) => run_scan(s, &formal, n_outputs, &caps, ctx, name),
    }
}

fn scalar_bool(t: Option<&Tensor>, op: &str) -> Result<bool> {
    let t = t.ok_or_else(|| CpuError::invalid(op, "the condition is missing"))?;
    match t.to_bools()?.as_slice() {
        [b] => Ok(*b),
        v => Err(CpuError::invalid(op, format!("the condition must have one element, got {}", v.len()))),
    }
}

fn run_loop(
    body: &Graph,
    formal: &[Option<Tensor>],
    n_outputs: usize,
    caps: &HashMap<String, Tensor>,
    ctx: &EvalContext,
    op: &str,
) -> Result<Vec<Tensor>> {
    let trip_limit = match formal.first().and_then(Option::as_ref) {
        Some(m) => match m.to_i64_vec()?.as_slice() {
            [n] => Some(*n),
            _ => return Err(CpuError::invalid(op, "M must have one element")),
        },
        None => None,
    };
    let mut cond = match formal.get(1).and_then(Option::as_ref) {
        Some(c) => scalar_bool(Some(c), op)?,
        None => true,
    };
    let mut carried: Vec<Tensor> = formal
        .iter()
        .skip(2)
        .map(|t| t.clone().ok_or_else(|| CpuError::invalid(op, "a loop-carried initial value is missing")))
        .collect::<Result<_>>()?;
    let n_carried = carried.len();
    if body.outputs.len() != 1 + n_outputs || n_outputs < n_carried {
        return Err(CpuError::invalid(
            op,
            format!(
                "body has {} outputs; the node {n_outputs} outputs and {n_carried} carried values",
                body.outputs.len()
            ),
        ));
    }
    let n_scan = n_outputs - n_carried;
    let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); n_scan];
    let mut i: i64 = 0;
    while cond && trip_limit.is_none_or(|m| i < m) {
        let mut args = vec![Tensor::scalar(i), Tensor::from_bools(vec![], vec![cond])?];
        args.extend(carried.iter().cloned());
        let mut outs = ctx.run_graph(body, &args, caps)?.into_iter();
        cond = scalar_bool(outs.next().as_ref(), op)?;
        carried = outs.by_ref().take(n_carried).collect();
        for (acc, t) in scans.iter_mut().zip(outs) {
            acc.push(t);
        }
        i += 1;
    }
    let mut results = carried;
    for (k, slices) in scans.into_iter().enumerate() {
        let stacked = if slices.is_empty() {
            empty_scan_output(body, 1 + n_carried + k)
        } else {
            bytes::stack(&slices, 0, false, op)?
        };
        results.push(stacked);
    }
    Ok(results)
}

/// A scan output of zero iterations: `[0, dims of the body's output…]` where known.
fn empty_scan_output(body: &Graph, i: usize) -> Tensor {
    let fact = body.outputs.get(i).and_then(|o| body.fact(*o).ok());
    let dtype = fact.and_then(|f| f.dtype).unwrap_or(DType::F32);
    let mut shape = vec![0];
    if let Some(dims) =
        fact.and_then(|f| f.shape.as_ref()).map(|s| s.0.iter().map(|d| d.known().unwrap_or(0)).collect::<Vec<_>>())
    {
        shape.extend(dims);
    }
    Tensor::zeros(dtype, shape)
}

fn run_scan(
    s: &Scan,
    formal: &[Option<Tensor>],
    n_outputs: usize,
    caps: &HashMap<String, Tensor>,
    ctx: &EvalContext,
    op: &str,
) -> Result<Vec<Tensor>> {
    let (seq_lens, formal) = match (s.batched, formal.split_first()) {
        (true, Some((lens, rest))) => (lens.as_ref(), rest),
        _ => (None, formal),
    };
    let all: Vec<Tensor> = formal
        .iter()
        .map(|t| t.clone().ok_or_else(|| CpuError::invalid(op, "Scan inputs cannot be omitted")))
        .collect::<Result<_>>()?;
    let n_states = all.len().checked_sub(s.num_scan_inputs).ok_or_else(|| CpuError::invalid(op, "too few inputs"))?;
    if !s.batched {
        return scan_core(s, all[..n_states].to_vec(), &all[n_states..], n_outputs, caps, ctx, op);
    }
    // Scan-8: every value has a leading batch axis; scan each batch element alone.
    let batch = all.first().and_then(|t| t.shape().first().copied()).unwrap_or(0);
    if all.iter().any(|t| t.shape().first() != Some(&batch)) {
        return Err(CpuError::invalid(op, "inputs have different batch sizes"));
    }
    let lens = match seq_lens {
        Some(t) => t.to_i64_vec()?,
        None => vec![],
    };
    let mut per_batch: Vec<Vec<Tensor>> = vec![Vec::new(); n_outputs];
    for b in 0..batch {
        let parts: Vec<Tensor> = all.iter().map(|t| bytes::slice(t, 0, b)).collect::<Result<_>>()?;
        let (states, mut seqs) = (parts[..n_states].to_vec(), parts[n_states..].to_vec());
        let full = seqs.first().and_then(|t| t.shape().first().copied()).unwrap_or(0);
        if let Some(&len) = lens.get(b) {
            let len = usize::try_from(len).ok().filter(|&l| l <= full);
            let len =
                len.ok_or_else(|| CpuError::invalid(op, format!("sequence length {:?} is out of range", lens.get(b))))?;
            seqs = seqs.iter().map(|t| bytes::prefix(t, len)).collect::<Result<_>>()?;
        }
        let outs = scan_core(s, states, &seqs, n_outputs, caps, ctx, op)?;
        for (k, t) in outs.into_iter().enumerate() {
            per_batch[k].push(if k >= n_states { bytes::pad_axis0(&t, full)? } else { t });
        }
    }
    per_batch.iter().map(|ts| bytes::stack(ts, 0, false, op)).collect()
}

/// Scan proper: `states` and sequences `seqs` with the node's scan attributes.
fn scan_core(
    s: &Scan,
    mut states: Vec<Tensor>,
    seqs: &[Tensor],
    n_outputs: usize,
    caps: &HashMap<String, Tensor>,
    ctx: &EvalContext,
    op: &str,
) -> Result<Vec<Tensor>> {
    let n_states = states.len();
    let n_scan_out = n_outputs.checked_sub(n_states).ok_or_else(|| CpuError::invalid(op, "too few outputs"))?;
    if s.input_axes.len() != seqs.len() || s.output_axes.len() != n_scan_out {
        return Err(CpuError::invalid(op, "scan axes do not match the scan inputs and outputs"));
    }
    let axes: Vec<usize> =
        seqs.iter().zip(&s.input_axes).map(|(t, &a)| bytes::axis(a, t.rank(), op)).collect::<Result<_>>()?;
    let lens: Vec<usize> = seqs.iter().zip(&axes).map(|(t, &a)| t.shape()[a]).collect();
    let len = lens.first().copied().unwrap_or(0);
    if lens.iter().any(|&l| l != len) {
        return Err(CpuError::invalid(op, format!("scan inputs have different lengths {lens:?}")));
    }
    let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); n_scan_out];
    for step in 0..len {
        let mut args = states.clone();
        for ((t, &a), &rev) in seqs.iter().zip(&axes).zip(&s.input_reverse) {
            args.push(bytes::slice(t, a, if rev { len - 1 - step } else { step })?);
        }
        let outs = ctx.run_graph(&s.body, &args, caps)?;
        if outs.len() != n_outputs {
            return Err(CpuError::invalid(op, format!("body gave {} outputs, expected {n_outputs}", outs.len())));
        }
        let mut outs = outs.into_iter();
        states = outs.by_ref().take(n_states).collect();
        for (acc, t) in scans.iter_mut().zip(outs) {
            acc.push(t);
        }
    }
    let mut results = states;
    for (k, slices) in scans.into_iter().enumerate() {
        let stacked = if slices.is_empty() {
            let t = empty_scan_output(&s.body, n_states + k);
            let axis = bytes::axis(s.output_axes[k], t.rank(), op)?;
            bytes::move_axis0(&t, axis)?
        } else {
            let axis = bytes::axis(s.output_axes[k], slices[0].rank() + 1, op)?;
            bytes::stack(&slices, axis, s.output_reverse[k], op)?
        };
        results.push(stacked);
    }
    Ok(results)
}
