//! Tactics: which implementation each launch uses, how it was chosen, and the timing
//! cache that keeps auto-tuning results between builds.
//!
//! A cuBLASLt product or a cuDNN convolution has candidates (the heuristic's algorithms,
//! best first); every other launch is one of Kiln's kernels. A choice is an index into
//! the candidates, which the heuristic lists the same way for the same GPU, library
//! versions, problem and operand alignments — all part of a cache key, so that an index
//! read back means the same algorithm.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{CudaError, Result};

/// What one launch runs (`Executor::tactics`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tactic {
    /// The launch's index in the executor's launch list.
    pub launch: usize,
    pub node: String,
    pub op: String,
    /// Readable: `cublasLt algo 3 (of 8)`, `cudnn IMPLICIT_PRECOMP_GEMM (2 of 5)`,
    /// `kiln Unary / elementwise.cu`.
    pub name: String,
    /// The candidate chosen, for launches that have candidates.
    pub choice: Option<usize>,
    /// Its measured time, when it was auto-tuned (now or in the timing cache).
    pub time_ms: Option<f32>,
}

/// One auto-tuning result.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimingEntry {
    /// The fastest candidate's index.
    pub choice: usize,
    /// How many candidates there were (a cached choice is used only when the count is
    /// the same: otherwise the heuristic's list changed).
    pub candidates: usize,
    /// Its median time.
    pub time_ms: f32,
}

/// The on-disk format's version; a file of another version is ignored.
pub const TIMING_CACHE_VERSION: u32 = 1;
const FORMAT: &str = "kiln-timing-cache";

/// Auto-tuning results by problem key (GPU, compute capability, library versions, op
/// kind, shape, dtype, flags). Load with [`TimingCache::load`], share behind
/// `Arc<Mutex<_>>` in `Options::timing_cache`, save with [`TimingCache::save`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimingCache {
    format: String,
    version: u32,
    entries: BTreeMap<String, TimingEntry>,
    /// Lookups that found an entry / did not, since this cache was made or loaded.
    #[serde(skip)]
    hits: usize,
    #[serde(skip)]
    misses: usize,
    /// Why the file loaded was ignored (another version), if it was.
    #[serde(skip)]
    ignored: Option<String>,
}

/// Just the header, to check the version before reading entries of another format.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

impl TimingCache {
    pub fn new() -> TimingCache {
        TimingCache { format: FORMAT.into(), version: TIMING_CACHE_VERSION, ..TimingCache::default() }
    }

    /// Reads a cache file. A missing file is an empty cache; a file of another version
    /// (or not a timing cache) is an empty cache whose [`TimingCache::ignored`] says
    /// why; an unreadable or corrupt file is an error naming it.
    pub fn load(path: &Path) -> Result<TimingCache> {
        let err = |msg: String| CudaError::Cache { path: path.to_path_buf(), msg };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TimingCache::new()),
            Err(e) => return Err(err(format!("reading the timing cache: {e}"))),
        };
        let header: Header = serde_json::from_str(&text).map_err(|e| err(format!("corrupt timing cache: {e}")))?;
        let ignore = |why: String| TimingCache { ignored: Some(why), ..TimingCache::new() };
        if header.format.as_deref() != Some(FORMAT) {
            return Ok(ignore(format!("{} is not a Kiln timing cache", path.display())));
        }
        if header.version != Some(TIMING_CACHE_VERSION) {
            let v = header.version.map_or("no".to_string(), |v| v.to_string());
            return Ok(ignore(format!(
                "{} has version {v}, this Kiln writes {TIMING_CACHE_VERSION}: ignored (it will be rewritten)",
                path.display()
            )));
        }
        serde_json::from_str(&text).map_err(|e| err(format!("corrupt timing cache: {e}")))
    }

    /// Writes the cache (to a temporary file renamed over `path`, so that a reader never
    /// sees half a file).
    pub fn save(&self, path: &Path) -> Result<()> {
        let err = |msg: String| CudaError::Cache { path: path.to_path_buf(), msg };
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("creating its folder: {e}")))?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| err(format!("writing: {e}")))?;
        std::fs::rename(&tmp, path).map_err(|e| err(format!("renaming into place: {e}")))
    }

    /// The entry for `key` with `candidates` candidates, counting a hit or a miss.
    pub fn lookup(&mut self, key: &str, candidates: usize) -> Option<TimingEntry> {
        let found = self.entries.get(key).copied().filter(|e| e.candidates == candidates && e.choice < candidates);
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    pub fn insert(&mut self, key: String, entry: TimingEntry) {
        self.entries.insert(key, entry);
    }

    pub fn get(&self, key: &str) -> Option<&TimingEntry> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn hits(&self) -> usize {
        self.hits
    }

    pub fn misses(&self) -> usize {
        self.misses
    }

    /// Why the file loaded was ignored, if it was.
    pub fn ignored(&self) -> Option<&str> {
        self.ignored.as_deref()
    }
}

/// The choice `Options::tactics` forces for launch `launch` (of node `node`), which has
/// `candidates` candidates (0 for a launch without: one of Kiln's kernels). `None`: not
/// forced. An index out of range, or a choice for a launch without candidates, is an
/// error naming the node (the plan was made for another graph, GPU or library).
pub fn forced_choice(
    tactics: Option<&[Option<usize>]>,
    launch: usize,
    node: &str,
    candidates: usize,
) -> Result<Option<usize>> {
    let Some(tactics) = tactics else { return Ok(None) };
    let forced = tactics.get(launch).copied().flatten();
    match forced {
        Some(i) if i >= candidates => Err(CudaError::PlanMismatch(format!(
            "launch {launch} (node '{node}') is forced to tactic {i}, it has {candidates} candidates \
             (the plan was built for another GPU, library version or graph); rebuild the plan"
        ))),
        f => Ok(f),
    }
}

/// Checks that `tactics` has one entry per launch.
pub fn check_tactic_count(tactics: Option<&[Option<usize>]>, launches: usize) -> Result<()> {
    match tactics {
        Some(t) if t.len() != launches => Err(CudaError::PlanMismatch(format!(
            "the plan forces tactics for {} launches, this graph has {launches}; rebuild the plan",
            t.len()
        ))),
        _ => Ok(()),
    }
}

/// The median of `times` (0 for none).
pub fn median(times: &mut [f32]) -> f32 {
    if times.is_empty() {
        return 0.0;
    }
    times.sort_by(f32::total_cmp);
    times[times.len() / 2]
}
