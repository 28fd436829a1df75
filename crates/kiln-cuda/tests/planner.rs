//! The arena planner: tensors alive at the same time never share bytes; the others do.

use kiln_cuda::planner::{ALIGN, Lifetime, plan};

fn lt(bytes: usize, first: usize, last: usize) -> Lifetime {
    Lifetime { bytes, first, last }
}

fn assert_valid(ts: &[Lifetime], align: usize) {
    let p = plan(ts, align);
    for (i, a) in ts.iter().enumerate() {
        assert_eq!(p.offsets[i] % align, 0, "tensor {i} misaligned");
        assert!(p.offsets[i] + a.bytes <= p.size, "tensor {i} outside the arena");
        for (j, b) in ts.iter().enumerate().skip(i + 1) {
            let live_together = a.first <= b.last && b.first <= a.last;
            let (oa, ob) = (p.offsets[i], p.offsets[j]);
            let disjoint = oa + a.bytes <= ob || ob + b.bytes <= oa;
            assert!(!live_together || disjoint || a.bytes == 0 || b.bytes == 0, "tensors {i} and {j} overlap: {p:?}");
        }
    }
    assert!(p.size <= p.unshared);
}

#[test]
fn a_chain_reuses_two_buffers() {
    // x0 -> x1 -> x2 -> x3: each tensor lives from its producer to its consumer.
    let ts: Vec<Lifetime> = (0..4).map(|i| lt(1000, i, i + 1)).collect();
    let p = plan(&ts, ALIGN);
    assert_eq!(p.size, 2 * 1024);
    assert_eq!(p.unshared, 4 * 1024);
    assert_valid(&ts, ALIGN);
}

#[test]
fn tensors_alive_together_get_disjoint_ranges() {
    let ts = [lt(4096, 0, 10), lt(512, 1, 2), lt(512, 2, 3), lt(2048, 3, 9), lt(256, 9, 10)];
    assert_valid(&ts, ALIGN);
    let p = plan(&ts, ALIGN);
    assert!(p.size < p.unshared);
}

#[test]
fn best_fit_fills_the_smallest_gap() {
    // Two long-lived tensors leave a 1 KiB and a 4 KiB hole between short-lived ones.
    let ts = [lt(4096, 0, 1), lt(1024, 0, 9), lt(1024, 2, 3), lt(4096, 0, 9), lt(1024, 5, 6)];
    assert_valid(&ts, ALIGN);
}

#[test]
fn random_lifetimes_never_collide() {
    let mut s = 0x1234_5678u64;
    let mut next = |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n) as usize
    };
    for _ in 0..200 {
        let n = 1 + next(40);
        let ts: Vec<Lifetime> = (0..n)
            .map(|_| {
                let first = next(50);
                lt(1 + next(100_000), first, first + next(10))
            })
            .collect();
        assert_valid(&ts, ALIGN);
    }
}

#[test]
fn empty_plan() {
    let p = plan(&[], ALIGN);
    assert_eq!(p.size, 0);
}
