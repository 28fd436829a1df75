//! Typed launchers for Kiln's CUDA C kernels (`kernels/*.cu`).
//!
//! - [`Kernels`]: the modules of one GPU, each compiled by NVRTC (through its disk cache)
//!   or taken from a plan's [`ModuleImage`]s (no NVRTC), loaded on first use, and the
//!   functions looked up in them.
//! - [`Buf`]: a device buffer as a launcher sees it: an address and a size in bytes. The
//!   launchers check every buffer against the bytes the kernel will touch, so a shape
//!   that does not fit its buffer is an error, never an out-of-bounds access.
//! - [`Launcher`]: one method per kernel family (`launch/elementwise.rs`,
//!   `launch/movement.rs`, `launch/reduce.rs`, `launch/norm.rs`): given dtypes, shapes
//!   and buffers it picks the kernel for the dtype, fills its descriptor, chooses the
//!   grid and launches on the device's stream. Nothing waits: results are there once the
//!   stream is synchronised (or read back, which synchronises).
//!
//! All launches go to the device's one stream, so stream order alone orders them; the
//! buffers carry no events of their own.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig};
use cudarc::nvrtc::Ptx;
use kiln_ir::DType;

use crate::kernels::{ALL, MAX_RANK, Source};
use crate::nvrtc::Compiler;
use crate::{CudaError, Device, Result};

pub mod call;
pub mod convpool;
pub mod dynamic;
pub mod elementwise;
pub mod family;
pub mod misc;
pub mod movement;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod topk;

/// Threads per block of the grid-stride kernels.
const THREADS: u32 = 256;
/// Threads per block of the row kernels (`KILN_ROW_THREADS` in common.cuh).
const ROW_THREADS: u32 = 256;
/// At most this many blocks; grid-stride loops cover the rest.
const MAX_BLOCKS: u32 = 65_535;

/// A kernel module as a plan file stores it: the cubin NVRTC built for `arch` and the
/// PTX beside it (which the driver can JIT for another GPU).
#[derive(Clone, PartialEq, Eq)]
pub struct ModuleImage {
    /// The kernel source's name (`elementwise`, `movement`…).
    pub name: String,
    /// The architecture of the cubin, e.g. `sm_90`.
    pub arch: String,
    pub cubin: Vec<u8>,
    pub ptx: String,
}

impl std::fmt::Debug for ModuleImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ModuleImage({} for {}: {} bytes of cubin, {} of PTX)",
            self.name,
            self.arch,
            self.cubin.len(),
            self.ptx.len()
        )
    }
}

/// Where modules come from: NVRTC (with its disk cache), or a plan's images only.
enum Origin {
    Nvrtc(Compiler),
    Images { images: Arc<Vec<ModuleImage>>, allow_ptx_fallback: bool },
}

/// A loaded module and the image it was loaded from (kept for [`Kernels::images`]).
struct Loaded {
    module: Arc<CudaModule>,
    image: ModuleImage,
}

/// The kernel modules of one GPU, compiled (or taken from a plan's images) and loaded
/// when first used.
pub struct Kernels {
    origin: Origin,
    arch: String,
    device_name: String,
    ctx: Arc<cudarc::driver::CudaContext>,
    modules: Mutex<HashMap<&'static str, Loaded>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// Modules that went through NVRTC (its disk cache included).
    compiled: AtomicUsize,
    /// Modules loaded from PTX by the driver's JIT (an image for another architecture).
    ptx_jit: Mutex<Vec<String>>,
}

impl Kernels {
    /// Kernels compiled by NVRTC for `dev`'s architecture.
    pub fn new(dev: &Device) -> Result<Kernels> {
        Ok(Kernels::with_origin(dev, Origin::Nvrtc(Compiler::new(&dev.arch())?)))
    }

    /// Kernels loaded from `images` only, never compiled (NVRTC and CUDA's headers are not
    /// needed): the cubin when its architecture is `dev`'s; else, with
    /// `allow_ptx_fallback`, the PTX through the driver's JIT; else `PlanMismatch`.
    pub fn with_images(dev: &Device, images: Arc<Vec<ModuleImage>>, allow_ptx_fallback: bool) -> Kernels {
        Kernels::with_origin(dev, Origin::Images { images, allow_ptx_fallback })
    }

    fn with_origin(dev: &Device, origin: Origin) -> Kernels {
        Kernels {
            origin,
            arch: dev.arch(),
            device_name: dev.name.clone(),
            ctx: dev.ctx.clone(),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            compiled: AtomicUsize::new(0),
            ptx_jit: Mutex::new(Vec::new()),
        }
    }

    /// The module of `src`, compiled (or read from the disk cache, or from the images)
    /// and loaded.
    pub fn module(&self, src: Source) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(src.name) {
            return Ok(m.module.clone());
        }
        let (image, jit) = self.image(src)?;
        let code = if jit { Ptx::from_src(image.ptx.clone()) } else { Ptx::from_binary(image.cubin.clone()) };
        let how = if jit { "JIT-compiling the PTX of" } else { "loading" };
        let module = self
            .ctx
            .load_module(code)
            .map_err(|e| CudaError::driver(format!("{how} kernel module '{}'", src.name), e))?;
        if jit {
            self.ptx_jit.lock().unwrap_or_else(|p| p.into_inner()).push(src.name.to_string());
        }
        modules.insert(src.name, Loaded { module: module.clone(), image });
        Ok(module)
    }

    /// The image to load for `src` and whether it is its PTX (to JIT) rather than its cubin.
    fn image(&self, src: Source) -> Result<(ModuleImage, bool)> {
        match &self.origin {
            Origin::Nvrtc(compiler) => {
                let c = compiler.compile(src.name, src.code)?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                let image = ModuleImage { name: src.name.into(), arch: self.arch.clone(), cubin: c.cubin, ptx: c.ptx };
                Ok((image, false))
            }
            Origin::Images { images, allow_ptx_fallback } => {
                let image = images.iter().find(|i| i.name == src.name).ok_or_else(|| {
                    CudaError::PlanMismatch(format!(
                        "the plan has no kernel module '{}' (it was built without it); rebuild the plan",
                        src.name
                    ))
                })?;
                if image.arch == self.arch && !image.cubin.is_empty() {
                    return Ok((image.clone(), false));
                }
                if *allow_ptx_fallback && !image.ptx.is_empty() {
                    return Ok((image.clone(), true));
                }
                Err(CudaError::PlanMismatch(format!(
                    "kernel module '{}' was built for {}, this GPU is {} ({}); rebuild the plan or allow PTX fallback",
                    src.name, image.arch, self.arch, self.device_name
                )))
            }
        }
    }

    /// Function `name` of `src`'s module.
    pub fn function(&self, src: Source, name: &str) -> Result<CudaFunction> {
        let key = format!("{}/{name}", src.name);
        if let Some(f) = self.functions.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(f.clone());
        }
        let f = self.module(src)?.load_function(name).map_err(|e| CudaError::launch(name, e))?;
        self.functions.lock().unwrap_or_else(|p| p.into_inner()).insert(key, f.clone());
        Ok(f)
    }

    /// Compiles and loads every module now (so the first inference pays nothing).
    pub fn load_all(&self) -> Result<()> {
        for src in ALL {
            self.module(*src)?;
        }
        Ok(())
    }

    /// The images of the modules loaded so far, sorted by name (the same list for the
    /// same graph on every build, so that plan files are reproducible).
    pub fn images(&self) -> Vec<ModuleImage> {
        let modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let mut images: Vec<ModuleImage> = modules.values().map(|m| m.image.clone()).collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        images
    }

    /// How many modules went through NVRTC (0 when loaded from images).
    pub fn compiled_modules(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }

    /// The modules loaded from PTX by the driver's JIT, in load order.
    pub fn ptx_jit_modules(&self) -> Vec<String> {
        self.ptx_jit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Device memory handed to a launcher: an address and the bytes there that the kernel may
/// touch. Borrows what it was made from, so the memory outlives it.
#[derive(Clone, Copy, Debug)]
pub struct Buf<'a> {
    addr: u64,
    bytes: usize,
    _mem: PhantomData<&'a ()>,
}

impl<'a> Buf<'a> {
    /// A buffer over `mem` (a `CudaSlice`, `CudaView`…), for reading or writing.
    pub fn of<T>(mem: &'a impl DevicePtr<T>, stream: &CudaStream) -> Buf<'a> {
        let (addr, _record) = mem.device_ptr(stream);
        Buf { addr, bytes: mem.num_bytes(), _mem: PhantomData }
    }

    /// A buffer over `mem` for writing.
    pub fn of_mut<T>(mem: &'a mut impl DevicePtrMut<T>, stream: &CudaStream) -> Buf<'a> {
        let bytes = mem.num_bytes();
        let (addr, _record) = mem.device_ptr_mut(stream);
        Buf { addr, bytes, _mem: PhantomData }
    }

    /// A buffer at a raw device address (an arena's offset, say).
    ///
    /// # Safety
    /// `addr..addr + bytes` must be device memory of this context that stays allocated
    /// for as long as any kernel launched on it may run.
    pub unsafe fn from_raw(addr: u64, bytes: usize) -> Buf<'a> {
        Buf { addr, bytes, _mem: PhantomData }
    }

    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The `len` bytes from `offset` on, if they are inside this buffer.
    pub fn sub(&self, offset: usize, len: usize) -> Option<Buf<'a>> {
        (offset.checked_add(len)? <= self.bytes).then_some(Buf {
            addr: self.addr + offset as u64,
            bytes: len,
            _mem: PhantomData,
        })
    }
}

/// Launches Kiln's kernels on one device.
#[derive(Clone, Copy)]
pub struct Launcher<'a> {
    pub dev: &'a Device,
    pub kernels: &'a Kernels,
}

/// Launches `$name` of `$src` with the given arguments, each a *named* local (the builder
/// keeps their addresses until the launch), on the launcher's stream.
macro_rules! launch {
    ($l:expr, $src:expr, $name:expr, $cfg:expr; $($arg:ident),* $(,)?) => {{
        let name: &str = &$name;
        let func = $l.kernels.function($src, name)?;
        let mut builder = $l.dev.stream.launch_builder(&func);
        $( cudarc::driver::PushKernelArg::arg(&mut builder, &$arg); )*
        // SAFETY: each launcher passes the arguments its kernel declares, in order and of
        // the same C types, and has checked that every buffer holds what the kernel reads
        // or writes for these shapes.
        unsafe { builder.launch($cfg) }.map(|_| ()).map_err(|e| $crate::CudaError::launch(name, e))
    }};
}
pub(crate) use launch;

impl<'a> Launcher<'a> {
    pub fn new(dev: &'a Device, kernels: &'a Kernels) -> Launcher<'a> {
        Launcher { dev, kernels }
    }

    /// Waits for every launch so far (and reports an error raised while they ran).
    pub fn synchronize(&self) -> Result<()> {
        self.dev.stream.synchronize().map_err(|e| CudaError::driver("synchronising the stream", e))
    }
}

/// A grid-stride launch over `n` elements.
fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS as usize) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// One block per row (grid-stride over rows beyond the block limit).
fn row_grid(rows: usize) -> LaunchConfig {
    let blocks = rows.clamp(1, MAX_BLOCKS as usize) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (ROW_THREADS, 1, 1), shared_mem_bytes: 0 }
}

fn elems(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major element strides of `shape`.
fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut s = vec![1isize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as isize;
    }
    s
}

/// Checks that `buf` holds `n` elements of `dtype`.
fn check_buf(op: &str, what: &str, buf: &Buf, n: usize, dtype: DType) -> Result<()> {
    let need = n.checked_mul(dtype.size()).ok_or_else(|| CudaError::invalid(op, format!("{what} is too large")))?;
    if need > buf.bytes {
        return Err(CudaError::BufferTooSmall { op: op.into(), what: what.into(), need, have: buf.bytes });
    }
    Ok(())
}

fn check_rank(op: &str, rank: usize) -> Result<()> {
    if rank > MAX_RANK {
        return Err(CudaError::unsupported(op, format!("rank {rank} (the kernels take at most {MAX_RANK})")));
    }
    Ok(())
}

/// The kernel-name suffix of a float dtype.
fn float_suffix(op: &str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        d => Err(CudaError::unsupported(op, format!("dtype {d}"))),
    }
}

/// The kernel-name suffix of a float or 32/64-bit integer dtype.
fn numeric_suffix(op: &str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::I32 => Ok("i32"),
        DType::I64 => Ok("i64"),
        d => float_suffix(op, d),
    }
}

/// The kernel-name suffix of the storage kernels for `dtype` (by element size).
fn storage_suffix(dtype: DType) -> &'static str {
    match dtype.size() {
        1 => "b1",
        2 => "b2",
        4 => "b4",
        _ => "b8",
    }
}

fn to_i64(op: &str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| CudaError::invalid(op, format!("size {v} does not fit in 64 bits")))
}
