//! Attention: scaled dot-product `Attention` (opsets 23, 24) and the recurrent
//! `LinearAttention` (opset 27).

use super::{OpFamily, optional, required};
use crate::{DType, Dim, Fact, IrError, Result, Shape};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AttentionOp {
    Attention(Attention),
    LinearAttention(LinearAttention),
}

/// How LinearAttention updates its `[d_k, d_v]` state per head and step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UpdateRule {
    /// S += k vᵀ.
    Linear,
    /// S = exp(g)·S + k vᵀ.
    Gated,
    /// S += k (β (v − Sᵀk))ᵀ.
    Delta,
    /// Both.
    GatedDelta,
}

impl UpdateRule {
    pub fn gated(self) -> bool {
        matches!(self, UpdateRule::Gated | UpdateRule::GatedDelta)
    }

    pub fn delta(self) -> bool {
        matches!(self, UpdateRule::Delta | UpdateRule::GatedDelta)
    }
}

/// Inputs: query, key, value (`[batch, seq, heads·size]`), past_state?
/// (`[batch, kv_heads, d_k, d_v]`), decay?, beta?. Outputs: output, present_state.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearAttention {
    pub q_num_heads: usize,
    pub kv_num_heads: usize,
    /// Default (`None`): `1/sqrt(d_k)`.
    pub scale: Option<f32>,
    pub rule: UpdateRule,
}

/// Which intermediate the optional 4th output (`qk_matmul_output`) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum QkOutputMode {
    /// Q·Kᵀ scaled.
    MatMul,
    /// After softcap.
    Softcap,
    /// After softcap and the mask/bias.
    Masked,
    /// After softmax.
    Softmax,
}

impl QkOutputMode {
    pub fn from_onnx(v: i64) -> Option<QkOutputMode> {
        Some(match v {
            0 => QkOutputMode::MatMul,
            1 => QkOutputMode::Softcap,
            2 => QkOutputMode::Masked,
            3 => QkOutputMode::Softmax,
            _ => return None,
        })
    }
}

/// Inputs: Q, K, V, attn_mask?, past_key?, past_value?, nonpad_kv_seqlen? (opset 24).
/// Outputs: Y, present_key?, present_value?, qk_matmul_output?.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attention {
    pub is_causal: bool,
    /// Head counts, required for 3-D (`[batch, seq, hidden]`) inputs.
    pub q_num_heads: Option<usize>,
    pub kv_num_heads: Option<usize>,
    pub qk_output: QkOutputMode,
    /// Default `1/sqrt(head_size)`.
    pub scale: Option<f32>,
    /// `softcap * tanh(x / softcap)` on the scores when > 0.
    pub softcap: f32,
    /// Precision of the softmax; Kiln always computes it in at least f32.
    pub softmax_precision: Option<DType>,
}

/// Dims of one of Q, K, V in the 4-D `[batch, heads, seq, head_size]` view.
struct Heads {
    batch: Dim,
    heads: Dim,
    seq: Dim,
    head_size: Dim,
}

fn div_dim(d: &Dim, n: Option<usize>) -> Dim {
    match (d, n) {
        (Dim::Known(v), Some(n)) if n > 0 => Dim::Known(v / n),
        _ => Dim::Unknown,
    }
}

fn add_dims(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => Dim::Known(x + y),
        _ => Dim::Unknown,
    }
}

impl Attention {
    fn heads(&self, f: &Fact, n_heads: Option<usize>, what: &str) -> Result<Option<Heads>> {
        let Some(s) = &f.shape else { return Ok(None) };
        match s.rank() {
            4 => Ok(Some(Heads {
                batch: s.0[0].clone(),
                heads: s.0[1].clone(),
                seq: s.0[2].clone(),
                head_size: s.0[3].clone(),
            })),
            3 => {
                let n = n_heads.ok_or_else(|| {
                    IrError::invalid("Attention", "3-D inputs need the q_num_heads and kv_num_heads attributes")
                })?;
                if let Dim::Known(h) = s.0[2]
                    && (n == 0 || !h.is_multiple_of(n))
                {
                    return Err(IrError::invalid(
                        "Attention",
                        format!("{what} hidden size {h} is not divisible by {n} heads"),
                    ));
                }
                Ok(Some(Heads {
                    batch: s.0[0].clone(),
                    heads: Dim::Known(n),
                    seq: s.0[1].clone(),
                    head_size: div_dim(&s.0[2], Some(n)),
                }))
            }
            r => Err(IrError::invalid("Attention", format!("{what} must be 3-D or 4-D, got rank {r}"))),
        }
    }
}

impl OpFamily for AttentionOp {
    fn name(&self) -> &'static str {
        match self {
            AttentionOp::Attention(_) => "Attention",
            AttentionOp::LinearAttention(_) => "LinearAttention",
        }
    }

    fn infer(&self, inputs: &[Option<&Fact>], n_outputs: usize) -> Result<Vec<Fact>> {
        let a = match self {
            AttentionOp::Attention(a) => a,
            AttentionOp::LinearAttention(l) => return infer_linear(l, inputs),
        };
        let name = "Attention";
        let (q, k, v) = (required(inputs, 0, name)?, required(inputs, 1, name)?, required(inputs, 2, name)?);
        if let (Some(rq), Some(rk), Some(rv)) = (q.rank(), k.rank(), v.rank())
            && (rq != rk || rq != rv)
        {
            return Err(IrError::invalid(name, format!("Q, K and V ranks differ: {rq}, {rk}, {rv}")));
        }
        let dtype = q.dtype;
        let qh = a.heads(q, a.q_num_heads, "Q")?;
        let kh = a.heads(k, a.kv_num_heads, "K")?;
        let vh = a.heads(v, a.kv_num_heads, "V")?;
        let past = optional(inputs, 4).and_then(|f| f.shape.as_ref()).and_then(|s| s.0.get(2).cloned());
        let total = kh.as_ref().map(|kh| match &past {
            Some(p) => add_dims(p, &kh.seq),
            None => kh.seq.clone(),
        });
        let y_shape = match (&qh, &vh, q.rank()) {
            (Some(qh), Some(vh), Some(4)) => {
                Some(Shape(vec![qh.batch.clone(), qh.heads.clone(), qh.seq.clone(), vh.head_size.clone()]))
            }
            (Some(qh), Some(vh), Some(3)) => {
                let hidden = match (&qh.heads, &vh.head_size) {
                    (Dim::Known(h), Dim::Known(d)) => Dim::Known(h * d),
                    _ => Dim::Unknown,
                };
                Some(Shape(vec![qh.batch.clone(), qh.seq.clone(), hidden]))
            }
            _ => None,
        };
        let mut out = vec![Fact { dtype, shape: y_shape, value: None }];
        if n_outputs > 1 {
            let present = |h: &Option<Heads>| {
                h.as_ref().map(|h| {
                    Shape(vec![
                        h.batch.clone(),
                        h.heads.clone(),
                        total.clone().unwrap_or(Dim::Unknown),
                        h.head_size.clone(),
                    ])
                })
            };
            out.push(Fact { dtype, shape: present(&kh), value: None });
            out.push(Fact { dtype, shape: present(&vh), value: None });
            let qk = qh.as_ref().map(|qh| {
                Shape(vec![qh.batch.clone(), qh.heads.clone(), qh.seq.clone(), total.clone().unwrap_or(Dim::Unknown)])
            });
            out.push(Fact { dtype, shape: qk, value: None });
        }
        Ok(out)
    }
}

fn infer_linear(l: &LinearAttention, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
    let name = "LinearAttention";
    let (q, k, v) = (required(inputs, 0, name)?, required(inputs, 1, name)?, required(inputs, 2, name)?);
    for (f, what) in [(q, "query"), (k, "key"), (v, "value")] {
        if let Some(r) = f.rank()
            && r != 3
        {
            return Err(IrError::invalid(name, format!("{what} must be 3-D, got rank {r}")));
        }
    }
    if l.q_num_heads == 0 || l.kv_num_heads == 0 || !l.q_num_heads.is_multiple_of(l.kv_num_heads) {
        return Err(IrError::invalid(name, "q_num_heads must be a positive multiple of kv_num_heads"));
    }
    let dim = |f: &Fact, i: usize| f.shape.as_ref().map_or(Dim::Unknown, |s| s.0[i].clone());
    let dv = div_dim(&dim(v, 2), Some(l.kv_num_heads));
    let dk = div_dim(&dim(q, 2), Some(l.q_num_heads));
    let hidden = match &dv {
        Dim::Known(d) => Dim::Known(d * l.q_num_heads),
        _ => Dim::Unknown,
    };
    let y = Fact { dtype: q.dtype, shape: Some(Shape(vec![dim(q, 0), dim(q, 1), hidden])), value: None };
    let state_dtype = optional(inputs, 3).and_then(|f| f.dtype).or(q.dtype);
    let state = Shape(vec![dim(q, 0), Dim::Known(l.kv_num_heads), dk, dv]);
    Ok(vec![y, Fact { dtype: state_dtype, shape: Some(state), value: None }])
}
