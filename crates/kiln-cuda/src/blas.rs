//! Matrix products through cuBLASLt, called through cudarc's `result`/`sys` layers (its
//! safe API picks TF32 for FP32 and keeps one algorithm only).
//!
//! Kiln's tensors are row-major; cuBLASLt is column-major. A row-major `C[m,n] = A·B`
//! is the column-major `Cᵀ[n,m] = Bᵀ·Aᵀ`, and a row-major matrix read column-major is
//! its transpose, so the call passes B as cuBLASLt's first operand and A as its second,
//! swaps m and n, and needs no copy. A bias vector of length n (one per output column,
//! Gemm's usual `C`) is then cuBLASLt's per-row bias epilogue.
//!
//! - FP32: compute type `CUBLAS_COMPUTE_32F` (true FP32); TF32 tensor cores only when
//!   asked (`allow_tf32`).
//! - FP16: FP16 operands, FP32 accumulation and scaling.
//! - Batches are strided (a stride of 0 broadcasts that operand to every batch).
//! - A plan binds its device pointers once (the executor's buffers never move), asks the
//!   heuristic for up to `max_algos` algorithms (kept for auto-tuning) and runs the first.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublaslt::result::{self, CublasError};
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaContext, CudaStream};

use crate::libs::{self, Lib};
use crate::{CudaError, Result};

fn blas_err(what: impl Into<String>) -> impl FnOnce(CublasError) -> CudaError {
    let what = what.into();
    move |e| CudaError::Blas { what, msg: e.to_string() }
}

/// A cuBLASLt handle (one per executor; plans share it).
pub struct Blas {
    handle: sys::cublasLtHandle_t,
    ctx: Arc<CudaContext>,
}

// SAFETY: a cuBLASLt handle may be used from any thread (calls on one handle are
// serialised by the caller: an executor runs one launch at a time).
unsafe impl Send for Blas {}
unsafe impl Sync for Blas {}

impl Blas {
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Arc<Blas>> {
        libs::ensure(Lib::CublasLt)?;
        ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        let handle = result::create_handle().map_err(blas_err("creating a handle"))?;
        Ok(Arc::new(Blas { handle, ctx: ctx.clone() }))
    }

    /// cuBLASLt's recommended workspace: 32 MiB on Hopper and later, 4 MiB before.
    pub fn default_workspace_limit(compute_capability: (i32, i32)) -> usize {
        if compute_capability.0 >= 9 { 32 << 20 } else { 4 << 20 }
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        if !self.handle.is_null() && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: created in `new`, destroyed once here.
            let _ = unsafe { result::destroy_handle(self.handle) };
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlasType {
    F32,
    F16,
    BF16,
}

impl BlasType {
    pub fn size(self) -> usize {
        match self {
            BlasType::F32 => 4,
            BlasType::F16 | BlasType::BF16 => 2,
        }
    }

    fn cuda(self) -> sys::cudaDataType {
        match self {
            BlasType::F32 => sys::cudaDataType::CUDA_R_32F,
            BlasType::F16 => sys::cudaDataType::CUDA_R_16F,
            BlasType::BF16 => sys::cudaDataType::CUDA_R_16BF,
        }
    }
}

/// What to compute, row-major: for each batch `b`,
/// `C_b = alpha · op(A_b) · op(B_b) + beta · C_b (+ bias) (then ReLU)`, with `op(A)` of
/// shape `[m,k]` (A stored `[k,m]` when `trans_a`), `op(B)` of shape `[k,n]` (B stored
/// `[n,k]` when `trans_b`) and C `[m,n]`, each densely packed.
#[derive(Clone, Debug, PartialEq)]
pub struct MatmulShape {
    pub dtype: BlasType,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Elements between consecutive batches of each operand (0: the same matrix for all).
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub alpha: f32,
    /// Scales the accumulator `C` (read from `Operands::c`); 0 ignores it.
    pub beta: f32,
    /// Adds a bias vector of length `n` (`Operands::bias`) to every row.
    pub bias: bool,
    pub relu: bool,
    /// FP32 only: let cuBLASLt use TF32 tensor cores (about 10 mantissa bits).
    pub allow_tf32: bool,
}

impl MatmulShape {
    /// A plain `[batch] × [m,k]·[k,n]` product of densely packed operands.
    pub fn new(dtype: BlasType, batch: usize, m: usize, n: usize, k: usize) -> MatmulShape {
        MatmulShape {
            dtype,
            m,
            n,
            k,
            batch,
            trans_a: false,
            trans_b: false,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
            alpha: 1.0,
            beta: 0.0,
            bias: false,
            relu: false,
            allow_tf32: false,
        }
    }
}

/// Device addresses of the operands (fixed for the plan's life).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operands {
    pub a: u64,
    pub b: u64,
    /// The accumulator read when `beta != 0` (may equal `d`).
    pub c: Option<u64>,
    /// The output.
    pub d: u64,
    pub bias: Option<u64>,
}

/// One algorithm the heuristic proposed.
#[derive(Clone, Copy, Debug)]
pub struct Algo {
    pub algo: sys::cublasLtMatmulAlgo_t,
    pub workspace_bytes: usize,
    pub waves: f32,
}

/// A product bound to its operands, with the algorithms to choose from.
pub struct MatmulPlan {
    blas: Arc<Blas>,
    shape: MatmulShape,
    ops: Operands,
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    algos: Vec<Algo>,
    chosen: usize,
}

// SAFETY: the descriptors are only read after `new` (run passes them to cuBLASLt,
// which does not modify them); `choose` needs `&mut`.
unsafe impl Send for MatmulPlan {}
unsafe impl Sync for MatmulPlan {}

impl std::fmt::Debug for MatmulPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatmulPlan").field("shape", &self.shape).field("algos", &self.algos.len()).finish()
    }
}

/// Largest power of two up to 256 dividing `ptr` and, for a batched operand, its stride.
fn alignment(ptr: u64, stride_bytes: Option<usize>) -> u32 {
    let mut x = ptr | 256;
    if let Some(s) = stride_bytes.filter(|&s| s > 0) {
        x |= s as u64;
    }
    1u32 << x.trailing_zeros().min(8)
}

impl MatmulPlan {
    /// Builds the descriptors and asks for up to `max_algos` algorithms that fit in
    /// `workspace_limit` bytes of workspace.
    pub fn new(
        blas: &Arc<Blas>,
        shape: &MatmulShape,
        ops: Operands,
        workspace_limit: usize,
        max_algos: usize,
    ) -> Result<MatmulPlan> {
        let s = shape;
        if s.m == 0 || s.n == 0 || s.k == 0 || s.batch == 0 {
            return Err(CudaError::Blas { what: "planning a product".into(), msg: format!("empty product {s:?}") });
        }
        if s.bias != ops.bias.is_some() || (s.beta != 0.0 && ops.c.is_none()) {
            return Err(CudaError::Blas {
                what: "planning a product".into(),
                msg: "bias/accumulator operands do not match the shape".into(),
            });
        }
        blas.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the context", e))?;
        let compute = match (s.dtype, s.allow_tf32) {
            (BlasType::F32, true) => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
            _ => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        };
        let desc = result::create_matmul_desc(compute, sys::cudaDataType::CUDA_R_32F)
            .map_err(blas_err("creating a matmul descriptor"))?;
        let mut plan = MatmulPlan {
            blas: blas.clone(),
            shape: s.clone(),
            ops,
            desc,
            layouts: [std::ptr::null_mut(); 3],
            algos: Vec::new(),
            chosen: 0,
        };
        // cuBLASLt's A is our B, its B our A (see the module comment).
        let op_a: i32 = s.trans_b.into();
        let op_b: i32 = s.trans_a.into();
        plan.set_desc(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, &op_a)?;
        plan.set_desc(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, &op_b)?;
        use sys::cublasLtEpilogue_t as E;
        let epilogue = match (s.bias, s.relu) {
            (false, false) => E::CUBLASLT_EPILOGUE_DEFAULT,
            (false, true) => E::CUBLASLT_EPILOGUE_RELU,
            (true, false) => E::CUBLASLT_EPILOGUE_BIAS,
            (true, true) => E::CUBLASLT_EPILOGUE_RELU_BIAS,
        };
        plan.set_desc(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
        if let Some(bias) = ops.bias {
            plan.set_desc(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
        }
        let (k, m, n) = (s.k as u64, s.m as u64, s.n as u64);
        let la = if s.trans_b { (k, n, k) } else { (n, k, n) };
        let lb = if s.trans_a { (m, k, m) } else { (k, m, k) };
        let lc = (n, m, n);
        let batched = s.batch > 1;
        for (i, ((rows, cols, ld), stride)) in
            [(la, s.stride_b), (lb, s.stride_a), (lc, s.stride_c)].into_iter().enumerate()
        {
            let layout = result::create_matrix_layout(s.dtype.cuda(), rows, cols, ld as i64)
                .map_err(blas_err("creating a matrix layout"))?;
            plan.layouts[i] = layout;
            if batched {
                let count = i32::try_from(s.batch).map_err(|_| CudaError::Blas {
                    what: "planning a product".into(),
                    msg: "too many batches".into(),
                })?;
                let stride = stride as i64;
                use sys::cublasLtMatrixLayoutAttribute_t as L;
                set_layout(layout, L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count)?;
                set_layout(layout, L::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride)?;
            }
        }
        plan.algos = plan.heuristics(workspace_limit, max_algos.max(1))?;
        if plan.algos.is_empty() {
            return Err(CudaError::Blas {
                what: format!("{s:?}"),
                msg: "cuBLASLt proposes no algorithm for this product".into(),
            });
        }
        Ok(plan)
    }

    fn set_desc<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, value: &T) -> Result<()> {
        // SAFETY: `desc` is live; `value` is the attribute's type (checked by the callers).
        unsafe {
            result::set_matmul_desc_attribute(
                self.desc,
                attr,
                value as *const T as *const c_void,
                std::mem::size_of::<T>(),
            )
        }
        .map_err(blas_err(format!("setting {attr:?}")))
    }

    fn heuristics(&self, workspace_limit: usize, max_algos: usize) -> Result<Vec<Algo>> {
        let pref = result::create_matmul_pref().map_err(blas_err("creating a preference"))?;
        let aligns = self.alignments();
        use sys::cublasLtMatmulPreferenceAttributes_t as P;
        let found = (|| {
            let limit = workspace_limit as u64;
            set_pref(pref, P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &limit)?;
            for (attr, align) in [
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            ]
            .into_iter()
            .zip(aligns)
            {
                set_pref(pref, attr, &align)?;
            }
            // SAFETY: an all-zero heuristic result is a valid value of this plain C struct.
            let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> = vec![unsafe { std::mem::zeroed() }; max_algos];
            let mut count = 0i32;
            let [la, lb, lc] = self.layouts;
            // SAFETY: every descriptor is live; `results` holds `max_algos` entries.
            unsafe {
                sys::cublasLtMatmulAlgoGetHeuristic(
                    self.blas.handle,
                    self.desc,
                    la,
                    lb,
                    lc,
                    lc,
                    pref,
                    max_algos as i32,
                    results.as_mut_ptr(),
                    &mut count,
                )
            }
            .result()
            .map_err(blas_err("asking for algorithms"))?;
            Ok(results
                .into_iter()
                .take(count.max(0) as usize)
                .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
                .map(|r| Algo { algo: r.algo, workspace_bytes: r.workspaceSize, waves: r.wavesCount })
                .collect())
        })();
        // SAFETY: created above, destroyed once.
        let _ = unsafe { result::destroy_matmul_pref(pref) };
        found
    }

    /// The operands' alignments in bytes as cuBLASLt's A, B, C, D (our B, A, C, D): the
    /// heuristic's algorithm list depends on them, so a timing cache key names them.
    pub fn alignments(&self) -> [u32; 4] {
        let s = &self.shape;
        let size = s.dtype.size();
        let batched = |stride: usize| (s.batch > 1).then_some(stride * size);
        [
            alignment(self.ops.b, batched(s.stride_b)),
            alignment(self.ops.a, batched(s.stride_a)),
            alignment(self.ops.c.unwrap_or(self.ops.d), batched(s.stride_c)),
            alignment(self.ops.d, batched(s.stride_c)),
        ]
    }

    pub fn shape(&self) -> &MatmulShape {
        &self.shape
    }

    /// The algorithms proposed, best first by the heuristic.
    pub fn algos(&self) -> &[Algo] {
        &self.algos
    }

    pub fn chosen(&self) -> usize {
        self.chosen
    }

    /// Picks algorithm `i` of [`MatmulPlan::algos`] (for auto-tuning).
    pub fn choose(&mut self, i: usize) -> Result<()> {
        if i >= self.algos.len() {
            return Err(CudaError::Blas { what: "choosing an algorithm".into(), msg: format!("no algorithm {i}") });
        }
        self.chosen = i;
        Ok(())
    }

    /// Workspace bytes the chosen algorithm needs.
    pub fn workspace_bytes(&self) -> usize {
        self.algos[self.chosen].workspace_bytes
    }

    /// Enqueues the product on `stream` (capturable into a CUDA graph).
    ///
    /// # Safety
    /// The operands given at planning must still be live device memory of the sizes
    /// the shape implies, and `workspace` must hold `workspace_bytes` bytes, at least
    /// [`MatmulPlan::workspace_bytes`].
    pub unsafe fn run(&self, stream: &CudaStream, workspace: u64, workspace_bytes: usize) -> Result<()> {
        let algo = &self.algos[self.chosen];
        if workspace_bytes < algo.workspace_bytes {
            return Err(CudaError::Blas {
                what: "running a product".into(),
                msg: format!("workspace of {workspace_bytes} bytes, the algorithm needs {}", algo.workspace_bytes),
            });
        }
        let [la, lb, lc] = self.layouts;
        let (alpha, beta) = (self.shape.alpha, self.shape.beta);
        let c = self.ops.c.unwrap_or(self.ops.d);
        // SAFETY: descriptors are live; pointers are the caller's promise.
        unsafe {
            result::matmul(
                self.blas.handle,
                self.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                self.ops.b as *const c_void,
                la,
                self.ops.a as *const c_void,
                lb,
                c as *const c_void,
                lc,
                self.ops.d as *mut c_void,
                lc,
                &algo.algo,
                workspace as *mut c_void,
                workspace_bytes,
                stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(blas_err("cublasLtMatmul"))
    }
}

fn set_layout<T>(layout: sys::cublasLtMatrixLayout_t, attr: sys::cublasLtMatrixLayoutAttribute_t, v: &T) -> Result<()> {
    // SAFETY: `layout` is live; `v` has the attribute's type.
    unsafe {
        result::set_matrix_layout_attribute(layout, attr, v as *const T as *const c_void, std::mem::size_of::<T>())
    }
    .map_err(blas_err(format!("setting {attr:?}")))
}

fn set_pref<T>(
    pref: sys::cublasLtMatmulPreference_t,
    attr: sys::cublasLtMatmulPreferenceAttributes_t,
    v: &T,
) -> Result<()> {
    // SAFETY: `pref` is live; `v` has the attribute's type.
    unsafe { result::set_matmul_pref_attribute(pref, attr, v as *const T as *const c_void, std::mem::size_of::<T>()) }
        .map_err(blas_err(format!("setting {attr:?}")))
}

impl Drop for MatmulPlan {
    fn drop(&mut self) {
        let _ = self.blas.ctx.bind_to_thread();
        // SAFETY: each descriptor was created in `new` and is destroyed once here.
        unsafe {
            for l in self.layouts {
                if !l.is_null() {
                    let _ = result::destroy_matrix_layout(l);
                }
            }
            let _ = result::destroy_matmul_desc(self.desc);
        }
    }
}
