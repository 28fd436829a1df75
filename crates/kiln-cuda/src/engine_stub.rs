// TEMPORARY stub (not committed): the API the cudart helper is building.
use crate::{Device, Executor, Options, Result};
use kiln_ir::{Graph, Tensor};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct ModuleImage {
    pub name: String,
    pub arch: String,
    pub cubin: Vec<u8>,
    pub ptx: String,
}
#[derive(Default, Debug)]
pub struct WeightStore;
impl WeightStore {
    pub fn device_bytes(&self) -> usize {
        0
    }
}
#[derive(Default, Debug)]
pub struct TimingCache;
impl TimingCache {
    pub fn load(_: &std::path::Path) -> Result<TimingCache> {
        Ok(TimingCache)
    }
    pub fn save(&self, _: &std::path::Path) -> Result<()> {
        Ok(())
    }
}
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseTimes {
    pub h2d_ms: f32,
    pub compute_ms: f32,
    pub d2h_ms: f32,
    pub enqueue_ms: f64,
}
pub struct Tactic {
    pub launch: usize,
    pub node: String,
    pub op: String,
    pub name: String,
    pub choice: Option<usize>,
    pub time_ms: Option<f32>,
}
pub struct LibVersions {
    pub driver: i32,
    pub nvrtc: (i32, i32),
    pub cublaslt: Option<usize>,
    pub cudnn: Option<usize>,
}
pub fn lib_versions() -> Result<LibVersions> {
    todo!()
}
pub type Cache = Option<Arc<Mutex<TimingCache>>>;
impl Executor {
    pub fn with_store(dev: &Device, graph: &Graph, options: Options, _: &Arc<WeightStore>) -> Result<Executor> {
        Executor::new(dev, graph, options)
    }
    pub fn module_images(&self) -> Result<Vec<ModuleImage>> {
        todo!()
    }
    pub fn tactics(&self) -> Vec<Tactic> {
        todo!()
    }
    pub fn begin(&mut self, _: Option<&[Tensor]>) -> Result<()> {
        todo!()
    }
    pub fn finish(&mut self) -> Result<PhaseTimes> {
        todo!()
    }
}
