//! The activation arena: every intermediate tensor gets an offset in one buffer, planned
//! once at build time from when each tensor is first written and last read. Tensors whose
//! lifetimes overlap never overlap in memory; the rest share space. Largest tensors are
//! placed first, each into the smallest gap that fits it (best fit), which is what
//! TensorRT-style planners and tinygrad's do.

/// A tensor's size and lifetime, in launch steps (both ends inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Offset of each tensor, in the order given.
    pub offsets: Vec<usize>,
    /// Bytes the arena needs.
    pub size: usize,
    /// Bytes all tensors would need without sharing (aligned), for the report.
    pub unshared: usize,
}

pub const ALIGN: usize = 256;

/// Plans offsets for `tensors`, each aligned to `align` bytes (a power of two).
pub fn plan(tensors: &[Lifetime], align: usize) -> ArenaPlan {
    let round = |n: usize| n.div_ceil(align) * align;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(round(tensors[i].bytes)), tensors[i].first, i));
    let mut offsets = vec![0usize; tensors.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(tensors.len());
    let mut size = 0;
    for i in order {
        let need = round(tensors[i].bytes);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| tensors[j].overlaps(&tensors[i]))
            .map(|&j| (offsets[j], offsets[j] + round(tensors[j].bytes)))
            .collect();
        busy.sort_unstable();
        offsets[i] = best_gap(&busy, need);
        size = size.max(offsets[i] + need);
        placed.push(i);
    }
    ArenaPlan { offsets, size, unshared: tensors.iter().map(|t| round(t.bytes)).sum() }
}

/// The start of the smallest free gap of at least `need` bytes between the busy ranges
/// (sorted by start), or the end of the last one.
fn best_gap(busy: &[(usize, usize)], need: usize) -> usize {
    let mut best: Option<(usize, usize)> = None; // (gap size, start)
    let mut cursor = 0;
    for &(start, end) in busy {
        if start > cursor {
            let gap = start - cursor;
            if gap >= need && best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, cursor));
            }
        }
        cursor = cursor.max(end);
    }
    best.map_or(cursor, |(_, s)| s)
}
