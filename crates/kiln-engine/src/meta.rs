//! The plan's self-description (its `META` section, JSON): who built it for what, with
//! which flags, its inputs and outputs, optimisation profiles, memory and layer table.
//! Everything `kiln inspect` shows without decoding the graph.

use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// Which backend a plan runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cpu,
    Cuda,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        })
    }
}

/// The GPU and libraries a CUDA plan was built (and tuned) for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuTarget {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub driver: i32,
    pub nvrtc: (i32, i32),
    pub cublaslt: Option<usize>,
    pub cudnn: Option<usize>,
}

impl GpuTarget {
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.compute_capability.0, self.compute_capability.1)
    }
}

/// Reduced precision a build may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecisionFlags {
    pub fp16: bool,
    pub bf16: bool,
    pub tf32: bool,
}

impl PrecisionFlags {
    /// The compute precision of the FP32 layers ("fp16", "bf16", "tf32" or "fp32").
    pub fn name(&self) -> &'static str {
        match (self.fp16, self.bf16, self.tf32) {
            (true, _, _) => "fp16",
            (_, true, _) => "bf16",
            (_, _, true) => "tf32",
            _ => "fp32",
        }
    }
}

/// How the plan was built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFlags {
    pub precision: PrecisionFlags,
    pub opt_level: u8,
    pub workspace_limit: Option<usize>,
    pub autotuned: bool,
}

/// A graph input or output as a caller sees it: dims are `None` where dynamic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorDesc {
    pub name: String,
    pub dtype: String,
    pub dims: Vec<Option<usize>>,
}

impl std::fmt::Display for TensorDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
        write!(f, "{} {}[{}]", self.name, self.dtype, dims.join("x"))
    }
}

/// One layer as built (at a profile's optimal shapes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// The node's name: a fused layer is named after the nodes it absorbed.
    pub name: String,
    pub op: String,
    /// How it runs: the kernel, library algorithm or "alias" (a view, nothing launched).
    pub tactics: Vec<String>,
    /// Element type of its first output ("f16", "f32", ...).
    pub precision: String,
    pub inputs: Vec<LayerTensor>,
    pub outputs: Vec<LayerTensor>,
    /// Bytes of the constants it reads.
    pub weight_bytes: usize,
}

/// A layer's operand: shape, memory format and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// "NCHW"-style row-major, or "NHWC" inside a channels-last region.
    pub format: String,
    /// "arena@OFFSET", "weights@OFFSET", "workspace@OFFSET" or "host" (CPU plans).
    pub location: String,
}

/// Device memory a context needs (at the profile's optimal shapes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySizes {
    pub arena_bytes: usize,
    pub unshared_activation_bytes: usize,
    pub weight_bytes: usize,
    pub workspace_bytes: usize,
}

/// What was built for one optimisation profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfilePlan {
    pub profile: Profile,
    pub memory: MemorySizes,
    pub launches: usize,
    pub layers: Vec<Layer>,
    /// The chosen algorithm index per launch (`None`: not a choice), replayed at load.
    pub tactic_choices: Vec<Option<usize>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanMeta {
    /// Kiln's version and commit: the graph encoding follows Kiln's IR, so a plan loads
    /// only in the Kiln that built it.
    pub kiln_version: String,
    pub backend: BackendKind,
    pub gpu: Option<GpuTarget>,
    pub flags: BuildFlags,
    pub model: String,
    pub inputs: Vec<TensorDesc>,
    pub outputs: Vec<TensorDesc>,
    pub profiles: Vec<ProfilePlan>,
    /// Names of the kernel modules in the `KERNELS` section.
    pub kernel_modules: Vec<String>,
}

/// Kiln's version and the commit it was built from (`build.rs`).
pub fn kiln_version() -> String {
    format!("{} ({})", env!("CARGO_PKG_VERSION"), env!("KILN_COMMIT"))
}
