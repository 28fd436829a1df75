//! Index ops (`kernels/index.cu`): GatherElements, GatherND, ScatterElements (and the
//! legacy Scatter), ScatterND, TensorScatter, OneHot. Indices may be i32 or i64 and
//! negative; one out of range is never used to address memory (a gather reads zero, a
//! scatter skips it). Scatters copy data into the output first, then apply the updates
//! in index order (deterministic, later duplicates win, as on the host).

use kiln_ir::DType;
use kiln_ir::ops::movement::{MovementOp, Reduction};

use super::{Cx, Lowered, axis, contiguous, is_storage};
use crate::executor::Kernel;
use crate::kernels::INDEX;
use crate::launch::call::{Arg, Call, Dims, Grid};
use crate::plan::SlotId;

/// Whether `op` is lowered here.
pub(crate) fn handles(op: &MovementOp) -> bool {
    matches!(
        op,
        MovementOp::GatherElements { .. }
            | MovementOp::GatherND { .. }
            | MovementOp::ScatterElements { .. }
            | MovementOp::ScatterND { .. }
            | MovementOp::TensorScatter { .. }
            | MovementOp::OneHot { .. }
    )
}

/// A slot argument covering the whole slot.
pub(crate) fn slot(cx: &Cx, id: SlotId) -> Arg {
    Arg::Slot { id, bytes: cx.slot(id).bytes }
}

/// The `idx64` flag of an index operand (i32 or i64).
fn idx64(cx: &Cx, id: SlotId) -> Result<i32, String> {
    match cx.dtype(id) {
        DType::I64 => Ok(1),
        DType::I32 => Ok(0),
        d => Err(format!("indices of dtype {d}")),
    }
}

/// The kernel-name suffix for elements of `d`: storage by size without a reduction, the
/// numeric type with one.
fn suffix(d: DType, r: Reduction) -> Result<&'static str, String> {
    if r == Reduction::None {
        if !is_storage(d) {
            return Err(format!("dtype {d}"));
        }
        return Ok(match d.size() {
            1 => "b1",
            2 => "b2",
            4 => "b4",
            _ => "b8",
        });
    }
    match d {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        DType::I32 => Ok("i32"),
        DType::I64 => Ok("i64"),
        d => Err(format!("a {r:?} reduction on dtype {d}")),
    }
}

fn red_code(r: Reduction) -> i32 {
    match r {
        Reduction::None => 0,
        Reduction::Add => 1,
        Reduction::Mul => 2,
        Reduction::Max => 3,
        Reduction::Min => 4,
    }
}

fn call(function: String, args: Vec<Arg>, grid: Grid) -> Kernel {
    Kernel::Call(Call { module: INDEX.name, function, args, grid })
}

pub(crate) fn lower(cx: &mut Cx, op: &MovementOp) -> Lowered {
    match op {
        MovementOp::GatherElements { axis: a } => {
            let (data, idx, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let (ds, is) = (cx.shape(data), cx.shape(idx));
            if ds.len() != is.len() || ds.is_empty() {
                return Err(format!("data {ds:?} and indices {is:?} differ in rank"));
            }
            let a = axis(*a, ds.len())?;
            if is.iter().zip(&ds).enumerate().any(|(k, (i, d))| k != a && i > d) {
                return Err(format!("indices {is:?} exceed data {ds:?}"));
            }
            let dstrides: Vec<i64> = contiguous(&ds).iter().map(|&s| s as i64).collect();
            let args = vec![
                slot(cx, data),
                slot(cx, idx),
                Arg::I32(idx64(cx, idx)?),
                slot(cx, y),
                Arg::I64(cx.len(y) as i64),
                Arg::I32(is.len() as i32),
                Arg::Dims(Dims::of_usize(&is)?),
                Arg::Dims(Dims::of(&dstrides)?),
                Arg::I32(a as i32),
                Arg::I64(ds[a] as i64),
                Arg::Null,
            ];
            let f = format!("kiln_gather_elements_{}", suffix(cx.dtype(y), Reduction::None)?);
            Ok(vec![call(f, args, Grid::Items(cx.len(y)))])
        }
        MovementOp::GatherND { batch_dims: b } => {
            let (data, idx, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let (ds, is) = (cx.shape(data), cx.shape(idx));
            let (b, q) = (*b, is.len());
            let k = *is.last().ok_or("indices of rank 0")?;
            if b >= q || b + k > ds.len() || ds[..b] != is[..b] {
                return Err(format!("indices {is:?} do not fit data {ds:?} with batch_dims {b}"));
            }
            let st = contiguous(&ds);
            let inner: usize = ds[b + k..].iter().product();
            let n_tuples: usize = is[..q - 1].iter().product();
            if n_tuples * inner != cx.len(y) {
                return Err(format!("output {:?} for {n_tuples} blocks of {inner}", cx.shape(y)));
            }
            let per_batch: usize = is[b..q - 1].iter().product();
            let args = vec![
                slot(cx, data),
                slot(cx, idx),
                Arg::I32(idx64(cx, idx)?),
                slot(cx, y),
                Arg::I64(n_tuples as i64),
                Arg::I32(k as i32),
                Arg::Dims(Dims::of_usize(&ds[b..b + k])?),
                Arg::Dims(Dims::of(&st[b..b + k].iter().map(|&s| s as i64).collect::<Vec<_>>())?),
                Arg::I64(per_batch.max(1) as i64),
                Arg::I64(ds[b..].iter().product::<usize>() as i64),
                Arg::I64(inner as i64),
                Arg::Null,
            ];
            let f = format!("kiln_gather_nd_{}", suffix(cx.dtype(y), Reduction::None)?);
            Ok(vec![call(f, args, Grid::Items(cx.len(y)))])
        }
        MovementOp::ScatterElements { axis: a, reduction, .. } => {
            let (data, idx, upd, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.single_output()?);
            let (ds, is) = (cx.shape(data), cx.shape(idx));
            if is != cx.shape(upd) || is.len() != ds.len() || ds.is_empty() || cx.dtype(upd) != cx.dtype(y) {
                return Err(format!("indices {is:?}, updates {:?} and data {ds:?} do not fit", cx.shape(upd)));
            }
            let a = axis(*a, ds.len())?;
            if is.iter().zip(&ds).enumerate().any(|(k, (i, d))| k != a && i > d) {
                return Err(format!("indices {is:?} exceed data {ds:?}"));
            }
            let sfx = suffix(cx.dtype(y), *reduction)?;
            let mut ks = vec![cx.copy_all(data, y)];
            let lines = cx.len(idx).checked_div(is[a]).unwrap_or(0);
            let ostrides: Vec<i64> = contiguous(&ds).iter().map(|&s| s as i64).collect();
            let args = vec![
                slot(cx, y),
                slot(cx, idx),
                Arg::I32(idx64(cx, idx)?),
                slot(cx, upd),
                Arg::I64(lines as i64),
                Arg::I32(is.len() as i32),
                Arg::Dims(Dims::of_usize(&is)?),
                Arg::Dims(Dims::of(&ostrides)?),
                Arg::I32(a as i32),
                Arg::I64(ds[a] as i64),
                Arg::I32(red_code(*reduction)),
                Arg::Null,
            ];
            ks.push(call(format!("kiln_scatter_elements_{sfx}"), args, Grid::Items(lines)));
            Ok(ks)
        }
        MovementOp::ScatterND { reduction } => {
            let (data, idx, upd, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.single_output()?);
            let (ds, is) = (cx.shape(data), cx.shape(idx));
            let q = is.len();
            let k = *is.last().ok_or("indices of rank 0")?;
            if k > ds.len() || cx.dtype(upd) != cx.dtype(y) {
                return Err(format!("indices {is:?} do not fit data {ds:?}"));
            }
            let want: Vec<usize> = is[..q - 1].iter().chain(&ds[k..]).copied().collect();
            if cx.shape(upd) != want {
                return Err(format!("updates {:?}, expected {want:?}", cx.shape(upd)));
            }
            let sfx = suffix(cx.dtype(y), *reduction)?;
            let inner: usize = ds[k..].iter().product();
            let n_tuples: usize = is[..q - 1].iter().product();
            let st = contiguous(&ds);
            let mut ks = vec![cx.copy_all(data, y)];
            let args = vec![
                slot(cx, y),
                slot(cx, idx),
                Arg::I32(idx64(cx, idx)?),
                slot(cx, upd),
                Arg::I64(n_tuples as i64),
                Arg::I32(k as i32),
                Arg::Dims(Dims::of_usize(&ds[..k])?),
                Arg::Dims(Dims::of(&st[..k].iter().map(|&s| s as i64).collect::<Vec<_>>())?),
                Arg::I64(inner as i64),
                Arg::I32(red_code(*reduction)),
                Arg::Null,
            ];
            let items = if n_tuples == 0 { 0 } else { inner };
            ks.push(call(format!("kiln_scatter_nd_{sfx}"), args, Grid::Items(items)));
            Ok(ks)
        }
        MovementOp::TensorScatter { axis: a, circular } => {
            let (cache, upd, y) = (cx.input(0)?, cx.input(1)?, cx.single_output()?);
            let (cs, us) = (cx.shape(cache), cx.shape(upd));
            let a = axis(*a, cs.len())?;
            let fits =
                a > 0 && cs.len() == us.len() && cs.iter().zip(&us).enumerate().all(|(k, (c, u))| k == a || c == u);
            if !fits || us[a] > cs[a] || cx.dtype(upd) != cx.dtype(y) {
                return Err(format!("update {us:?} does not fit cache {cs:?} on axis {a}"));
            }
            let widx = cx.opt_input(2);
            if let Some(w) = widx
                && cx.len(w) != cs[0]
            {
                return Err(format!("{} write indices for a batch of {}", cx.len(w), cs[0]));
            }
            let per_batch: usize = cs[1..a].iter().product();
            let outer = cs[0] * per_batch;
            let inner: usize = cs[a + 1..].iter().product();
            let mut ks = vec![cx.copy_all(cache, y)];
            let args = vec![
                slot(cx, y),
                slot(cx, upd),
                widx.map_or(Arg::Null, |w| slot(cx, w)),
                Arg::I32(widx.map_or(Ok(1), |w| idx64(cx, w))?),
                Arg::I64(outer as i64),
                Arg::I64(per_batch.max(1) as i64),
                Arg::I64(us[a] as i64),
                Arg::I64(cs[a] as i64),
                Arg::I64(inner as i64),
                Arg::I32(i32::from(*circular)),
                Arg::Null,
            ];
            let f = format!("kiln_tensor_scatter_{}", suffix(cx.dtype(y), Reduction::None)?);
            ks.push(call(f, args, Grid::Items(cx.len(upd))));
            Ok(ks)
        }
        MovementOp::OneHot { axis: a } => {
            let (idx, values, y) = (cx.input(0)?, cx.input(2)?, cx.single_output()?);
            let (is, ys) = (cx.shape(idx), cx.shape(y));
            let a = axis(*a, is.len() + 1)?;
            if ys.len() != is.len() + 1 || cx.len(values) != 2 || cx.dtype(values) != cx.dtype(y) {
                return Err(format!("indices {is:?}, output {ys:?}"));
            }
            let code = match cx.dtype(idx) {
                DType::F32 => 0,
                DType::I32 => 1,
                DType::I64 => 2,
                d => return Err(format!("indices of dtype {d}")),
            };
            let (outer, depth, inner): (usize, usize, usize) =
                (is[..a].iter().product(), ys[a], is[a..].iter().product());
            let args = vec![
                slot(cx, idx),
                Arg::I32(code),
                slot(cx, values),
                slot(cx, y),
                Arg::I64(outer as i64),
                Arg::I64(depth as i64),
                Arg::I64(inner as i64),
            ];
            let f = format!("kiln_one_hot_{}", suffix(cx.dtype(y), Reduction::None)?);
            Ok(vec![call(f, args, Grid::Items(cx.len(y)))])
        }
        _ => Err("not an index op".into()),
    }
}
