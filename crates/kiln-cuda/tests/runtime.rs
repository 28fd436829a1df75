//! Host only: the runtime API's parts that need no GPU — the timing cache's file format
//! (round trip, versions, corrupt files), forced tactics out of range, and the types an
//! engine moves between threads.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_cuda::tactics::{TIMING_CACHE_VERSION, check_tactic_count, forced_choice};
use kiln_cuda::{CudaError, Executor, ModuleImage, Options, PhaseTimes, TimingCache, TimingEntry, WeightStore};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-runtime-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir.join(name)
}

#[test]
fn timing_cache_round_trips_through_a_file() {
    let path = temp_path("round_trip.json");
    let mut cache = TimingCache::new();
    let e = TimingEntry { choice: 3, candidates: 8, time_ms: 0.125 };
    cache.insert("H100|sm_90|matmul|m 64".into(), e);
    cache.insert("H100|sm_90|conv|x [1,3,8,8]".into(), TimingEntry { choice: 0, candidates: 5, time_ms: 1.5 });
    cache.save(&path).expect("saves");
    let mut back = TimingCache::load(&path).expect("loads");
    assert_eq!(back.len(), 2);
    assert_eq!(back.ignored(), None);
    assert_eq!(back.lookup("H100|sm_90|matmul|m 64", 8), Some(e));
    // Another candidate count: the heuristic's list changed, the entry does not apply.
    assert_eq!(back.lookup("H100|sm_90|matmul|m 64", 7), None);
    assert_eq!(back.lookup("absent", 8), None);
    assert_eq!((back.hits(), back.misses()), (1, 2));
    // A missing file is an empty cache.
    let empty = TimingCache::load(&temp_path("missing.json")).expect("a missing file is no error");
    assert!(empty.is_empty() && empty.ignored().is_none());
}

#[test]
fn a_timing_cache_of_another_version_is_ignored_with_a_reason() {
    let path = temp_path("old_version.json");
    let old = format!(
        r#"{{"format":"kiln-timing-cache","version":{},"entries":{{"k":{{"choice":1}}}}}}"#,
        TIMING_CACHE_VERSION + 1
    );
    std::fs::write(&path, old).expect("writes");
    let cache = TimingCache::load(&path).expect("another version is not an error");
    assert!(cache.is_empty());
    let why = cache.ignored().expect("a reason");
    assert!(why.contains("version") && why.contains(&(TIMING_CACHE_VERSION + 1).to_string()), "{why}");
    // JSON that is not a timing cache is ignored too.
    std::fs::write(&path, r#"{"something":"else"}"#).expect("writes");
    let cache = TimingCache::load(&path).expect("not an error");
    assert!(cache.is_empty() && cache.ignored().is_some_and(|w| w.contains("not a Kiln timing cache")));
}

#[test]
fn a_corrupt_timing_cache_is_an_error_naming_the_file() {
    let path = temp_path("corrupt.json");
    for text in ["{\"format\":\"kiln-timing-cache\",\"vers", "\u{0}\u{1}binary", ""] {
        std::fs::write(&path, text).expect("writes");
        match TimingCache::load(&path) {
            Err(CudaError::Cache { path: p, msg }) => {
                assert_eq!(p, path);
                assert!(msg.contains("corrupt"), "{msg}");
            }
            other => panic!("expected a cache error for {text:?}, got {other:?}"),
        }
    }
    // Entries of the right version but the wrong shape are corrupt too.
    let bad = format!(
        r#"{{"format":"kiln-timing-cache","version":{TIMING_CACHE_VERSION},"entries":{{"k":{{"choice":"x"}}}}}}"#
    );
    std::fs::write(&path, bad).expect("writes");
    assert!(matches!(TimingCache::load(&path), Err(CudaError::Cache { .. })));
}

#[test]
fn forced_tactics_out_of_range_name_the_node() {
    let forced = vec![None, Some(2), Some(9), Some(0)];
    let t = Some(forced.as_slice());
    assert_eq!(forced_choice(None, 0, "mm", 8).ok(), Some(None));
    assert_eq!(forced_choice(t, 0, "mm", 8).ok(), Some(None));
    assert_eq!(forced_choice(t, 1, "mm", 8).ok(), Some(Some(2)));
    match forced_choice(t, 2, "fc2", 8) {
        Err(CudaError::PlanMismatch(msg)) => assert!(msg.contains("'fc2'") && msg.contains("tactic 9"), "{msg}"),
        other => panic!("expected a plan mismatch, got {other:?}"),
    }
    // A choice forced on a launch without candidates (one of Kiln's kernels).
    assert!(matches!(forced_choice(t, 3, "relu", 0), Err(CudaError::PlanMismatch(m)) if m.contains("'relu'")));
    assert!(check_tactic_count(t, 4).is_ok());
    assert!(matches!(check_tactic_count(t, 5), Err(CudaError::PlanMismatch(_))));
}

#[test]
fn runtime_types_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<Executor>();
    assert_send_sync::<WeightStore>();
    assert_send_sync::<Arc<WeightStore>>();
    assert_send_sync::<TimingCache>();
    assert_send_sync::<Arc<Mutex<TimingCache>>>();
    assert_send_sync::<Options>();
    assert_send_sync::<ModuleImage>();
    assert_send_sync::<PhaseTimes>();
    assert_send_sync::<kiln_cuda::graph_capture::LaunchFn>();
}

#[test]
fn module_images_debug_without_their_bytes() {
    let m = ModuleImage { name: "elementwise".into(), arch: "sm_90".into(), cubin: vec![7; 4096], ptx: "x".repeat(10) };
    let d = format!("{m:?}");
    assert!(d.contains("elementwise") && d.contains("4096") && d.len() < 200, "{d}");
}
