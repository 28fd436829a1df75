//! Einsum: the equation's labels resolved on the host into sizes and per-input strides
//! (repeated labels add their strides: diagonals; broadcast dims get stride 0), then one
//! generic contraction kernel of `einsum.cu`.

use kiln_ir::DType;
use kiln_ir::ops::nn::Einsum;

use super::{Cx, Lowered, contiguous};
use crate::executor::Kernel;
use crate::kernels::EINSUM;
use crate::launch::family::{FamGrid, FamilyCall};

const MAX_LABELS: usize = 16;
const MAX_INPUTS: usize = 4;

pub(crate) fn lower(cx: &mut Cx, e: &Einsum) -> Lowered {
    let y = cx.single_output()?;
    let dtype = cx.dtype(y);
    let sfx = match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        DType::I32 => "i32",
        DType::I64 => "i64",
        d => return Err(format!("dtype {d}")),
    };
    let n_in = cx.step.inputs.len();
    if n_in == 0 || n_in > MAX_INPUTS {
        return Err(format!("{n_in} inputs (1 to {MAX_INPUTS})"));
    }
    let ins: Vec<usize> = (0..n_in).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
    if ins.iter().any(|&s| cx.dtype(s) != dtype) {
        return Err("inputs of different dtypes".into());
    }
    let shapes: Vec<Vec<usize>> = ins.iter().map(|&s| cx.shape(s)).collect();
    let ranks: Vec<usize> = shapes.iter().map(Vec::len).collect();
    let (labels, _) = e.labels(&ranks).map_err(|e| e.to_string())?;
    let (out_labels, in_labels) = labels.split_last().ok_or("no output")?;
    // Output labels first, then the contracted ones in order of appearance.
    let mut order: Vec<u16> = out_labels.clone();
    for ls in in_labels {
        for &l in ls {
            if !order.contains(&l) {
                order.push(l);
            }
        }
    }
    if order.len() > MAX_LABELS {
        return Err(format!("{} labels (at most {MAX_LABELS})", order.len()));
    }
    let mut sizes = vec![1usize; order.len()];
    for (ls, shape) in in_labels.iter().zip(&shapes) {
        for (l, &d) in ls.iter().zip(shape) {
            let k = order.iter().position(|x| x == l).ok_or("unknown label")?;
            if d != 1 {
                if sizes[k] != 1 && sizes[k] != d {
                    return Err("sizes of a subscript differ".into());
                }
                sizes[k] = d;
            }
        }
    }
    let ys = cx.shape(y);
    if ys != sizes[..out_labels.len()] {
        return Err(format!("output {ys:?}, the equation gives {:?}", &sizes[..out_labels.len()]));
    }
    let mut ints = vec![n_in as i64, order.len() as i64, out_labels.len() as i64];
    ints.extend((0..MAX_LABELS).map(|k| sizes.get(k).map_or(1, |&s| s as i64)));
    let es = dtype.size();
    let mut call = FamilyCall::new(EINSUM, format!("kiln_einsum_{sfx}"), FamGrid::Elems(cx.len(y)));
    call.ptrs = vec![None; 5];
    for (k, ((ls, shape), &s)) in in_labels.iter().zip(&shapes).zip(&ins).enumerate() {
        let st = contiguous(shape);
        let mut strides = [0i64; MAX_LABELS];
        for ((l, &d), &stv) in ls.iter().zip(shape).zip(&st) {
            let j = order.iter().position(|x| x == l).ok_or("unknown label")?;
            if d != 1 {
                strides[j] += stv as i64;
            }
        }
        ints.extend(strides);
        call.ptrs[k] = Some((s, cx.len(s) * es));
    }
    call.ptrs[4] = Some((y, cx.len(y) * es));
    call.ints = ints;
    if ins.iter().any(|&s| cx.len(s) == 0) && cx.len(y) > 0 {
        // Every sum is empty: zeros.
        return Ok(vec![Kernel::Fill { dtype, y, value: 0.0 }]);
    }
    Ok(vec![Kernel::Family(Box::new(call))])
}
