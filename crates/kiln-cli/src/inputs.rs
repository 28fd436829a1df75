//! Model inputs for `kiln run`: from .npy files, or random with a seed.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use half::{bf16, f16};
use kiln_ir::{DType, Dim, Fact, Graph, Tensor};

/// `NAME=FILE.npy`.
pub fn parse_input_arg(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s.split_once('=').ok_or_else(|| format!("expected NAME=FILE.npy, got '{s}'"))?;
    Ok((name.to_string(), PathBuf::from(file)))
}

/// `NAME:1x3x224x224` (trtexec's --shapes syntax).
pub fn parse_shape_arg(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s.rsplit_once(':').ok_or_else(|| format!("expected NAME:DxDxD, got '{s}'"))?;
    let dims = dims
        .split('x')
        .map(|d| d.parse::<usize>().map_err(|_| format!("bad dimension '{d}' in '{s}'")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// SplitMix64: a small, good, seedable generator (reproducible inputs across runs).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Builds every graph input: from `files` when given, else random (floats uniform in
/// [0, 1), integers in [0, 10), bools fair) with dims from `shapes`, the model's known
/// dims, and 1 for any other dim (reported in `notes`).
pub fn make_inputs(
    graph: &Graph,
    files: &[(String, PathBuf)],
    shapes: &[(String, Vec<usize>)],
    seed: u64,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Tensor>> {
    let names: Vec<&str> = graph.inputs.iter().map(|o| graph.outlet_name(*o)).collect();
    for n in files.iter().map(|(n, _)| n).chain(shapes.iter().map(|(n, _)| n)) {
        if !names.contains(&n.as_str()) {
            bail!("the model has no input '{n}' (its inputs: {})", names.join(", "));
        }
    }
    let files: HashMap<&str, &PathBuf> = files.iter().map(|(n, p)| (n.as_str(), p)).collect();
    let shapes: HashMap<&str, &Vec<usize>> = shapes.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let mut rng = Rng::new(seed);
    let mut symbols: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for o in &graph.inputs {
        let name = graph.outlet_name(*o);
        let fact = graph.fact(*o)?;
        let t = match files.get(name) {
            Some(p) => crate::npy::read(p).with_context(|| format!("input '{name}'"))?,
            None => {
                let shape = concrete_shape(name, fact, shapes.get(name).copied(), &mut symbols, notes)?;
                let dtype = fact.dtype.with_context(|| format!("input '{name}' has no declared dtype"))?;
                random_tensor(dtype, shape, &mut rng).with_context(|| format!("input '{name}'"))?
            }
        };
        out.push(t);
    }
    Ok(out)
}

fn concrete_shape(
    name: &str,
    fact: &Fact,
    given: Option<&Vec<usize>>,
    symbols: &mut HashMap<String, usize>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<usize>> {
    if let Some(s) = given {
        return Ok(s.clone());
    }
    let shape = fact
        .shape
        .as_ref()
        .with_context(|| format!("input '{name}' has an unknown rank: give --shapes {name}:DxD…"))?;
    Ok(shape
        .0
        .iter()
        .map(|d| match d {
            Dim::Known(n) => *n,
            Dim::Sym(s) => *symbols.entry(s.to_string()).or_insert_with(|| {
                notes.push(format!("input '{name}': dim '{s}' set to 1 (use --shapes to choose)"));
                1
            }),
            Dim::Unknown => {
                notes.push(format!("input '{name}': an unnamed dynamic dim set to 1 (use --shapes to choose)"));
                1
            }
        })
        .collect())
}

fn random_tensor(dtype: DType, shape: Vec<usize>, rng: &mut Rng) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut f = || rng.next_f64();
    Ok(match dtype {
        DType::F32 => Tensor::from_vec(shape, (0..n).map(|_| f() as f32).collect())?,
        DType::F64 => Tensor::from_vec(shape, (0..n).map(|_| f()).collect())?,
        DType::F16 => Tensor::from_vec(shape, (0..n).map(|_| f16::from_f64(f())).collect())?,
        DType::BF16 => Tensor::from_vec(shape, (0..n).map(|_| bf16::from_f64(f())).collect())?,
        DType::Bool => Tensor::from_bools(shape, (0..n).map(|_| f() < 0.5).collect())?,
        DType::I64 => Tensor::from_vec(shape, (0..n).map(|_| (f() * 10.0) as i64).collect())?,
        DType::I32 => Tensor::from_vec(shape, (0..n).map(|_| (f() * 10.0) as i32).collect())?,
        DType::I8 => Tensor::from_vec(shape, (0..n).map(|_| (f() * 10.0) as i8).collect())?,
        DType::U8 => Tensor::from_vec(shape, (0..n).map(|_| (f() * 10.0) as u8).collect())?,
        other => bail!("random {other} inputs are not supported; give a .npy file with --input"),
    })
}
