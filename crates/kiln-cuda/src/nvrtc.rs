//! Compiling Kiln's CUDA C kernels with NVRTC for the exact GPU: a cubin for the device's
//! compute capability, and the PTX beside it (for a later JIT on another GPU). Results
//! are cached on disk under a hash of the source, the options, the architecture and the
//! NVRTC version, so a kernel compiles once per machine.

use std::ffi::{CString, c_char};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result, sys};

use crate::libs::{self, Lib};
use crate::{CudaError, Result};

/// A compiled kernel module.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub ptx: String,
    /// Whether it came from the disk cache.
    pub cached: bool,
}

pub struct Compiler {
    arch: String,
    options: Vec<String>,
    version: (i32, i32),
    cache: Option<PathBuf>,
}

impl Compiler {
    /// A compiler for `arch` (e.g. `sm_90`), with CUDA's headers on the include path.
    pub fn new(arch: &str) -> Result<Compiler> {
        libs::ensure(Lib::Nvrtc)?;
        let version = nvrtc_version()?;
        let mut options =
            vec![format!("--gpu-architecture={arch}"), "-std=c++17".to_string(), "-default-device".into()];
        options.extend(include_dirs()?.into_iter().map(|d| format!("-I{}", d.display())));
        Ok(Compiler { arch: arch.to_string(), options, version, cache: cache_dir() })
    }

    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// Compiles `source` (named `name` in errors), from the cache when it is there.
    pub fn compile(&self, name: &str, source: &str) -> Result<Compiled> {
        let key = self.key(source);
        if let Some(hit) = self.cache.as_deref().and_then(|dir| read_cached(dir, name, key)) {
            return Ok(hit);
        }
        let compiled = self.compile_uncached(name, source)?;
        if let Some(dir) = &self.cache {
            // A cache that cannot be written only costs time on the next run.
            let _ = write_cached(dir, name, key, &compiled);
        }
        Ok(compiled)
    }

    fn key(&self, source: &str) -> u64 {
        let mut h = Fnv::new();
        h.write(source.as_bytes());
        for o in &self.options {
            h.write(o.as_bytes());
        }
        h.write(format!("{}.{}", self.version.0, self.version.1).as_bytes());
        h.finish()
    }

    fn compile_uncached(&self, name: &str, source: &str) -> Result<Compiled> {
        let fail = |log: String| CudaError::Compile { kernel: name.to_string(), arch: self.arch.clone(), log };
        let src = CString::new(source).map_err(|_| fail("source contains a NUL byte".into()))?;
        let cname = CString::new(format!("{name}.cu")).map_err(|_| fail("bad kernel name".into()))?;
        let prog = result::create_program(&src, Some(&cname)).map_err(|e| fail(e.to_string()))?;
        // SAFETY: `prog` is a live program until destroyed below.
        let out = unsafe {
            let compiled = match result::compile_program(prog, &self.options) {
                Ok(()) => Ok((cubin(prog), result::get_ptx(prog))),
                Err(e) => Err(format!("{e}\n{}", log(prog))),
            };
            let _ = result::destroy_program(prog);
            compiled
        };
        let (cubin, ptx) = out.map_err(fail)?;
        let cubin = cubin.map_err(|e| fail(e.to_string()))?;
        let ptx = ptx.map_err(|e| fail(e.to_string()))?;
        Ok(Compiled { cubin, ptx: c_chars_to_string(&ptx), cached: false })
    }
}

/// # Safety
/// `prog` must be a compiled, live program.
unsafe fn cubin(prog: sys::nvrtcProgram) -> std::result::Result<Vec<u8>, result::NvrtcError> {
    let mut size = 0usize;
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }.result()?;
    let mut buf = vec![0u8; size];
    unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) }.result()?;
    Ok(buf)
}

/// # Safety
/// `prog` must be a live program.
unsafe fn log(prog: sys::nvrtcProgram) -> String {
    unsafe { result::get_program_log(prog) }.map(|l| c_chars_to_string(&l)).unwrap_or_default()
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// NVRTC's version (major, minor); NVRTC must be loaded (`libs::ensure`).
pub(crate) fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded (ensure).
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::driver("reading the NVRTC version", e))?;
    Ok((major, minor))
}

/// CUDA's include folders: `<root>/include` holding `cuda_fp16.h`, and CUDA 13's CCCL
/// headers beside it.
pub fn include_dirs() -> Result<Vec<PathBuf>> {
    let roots = libs::cuda_roots();
    let searched: Vec<PathBuf> = roots.iter().map(|r| r.join("include")).collect();
    let include = searched
        .iter()
        .find(|d| d.join("cuda_fp16.h").is_file())
        .cloned()
        .ok_or(CudaError::HeadersMissing { searched: searched.clone() })?;
    let mut dirs = vec![include.clone()];
    if include.join("cccl").is_dir() {
        dirs.push(include.join("cccl"));
    }
    Ok(dirs)
}

/// `KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln/kernels`, else `~/.cache/kiln/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kiln/kernels"))
}

fn cache_path(dir: &Path, name: &str, key: u64, ext: &str) -> PathBuf {
    dir.join(format!("{name}-{key:016x}.{ext}"))
}

fn read_cached(dir: &Path, name: &str, key: u64) -> Option<Compiled> {
    let cubin = std::fs::read(cache_path(dir, name, key, "cubin")).ok()?;
    let ptx = std::fs::read_to_string(cache_path(dir, name, key, "ptx")).ok()?;
    (!cubin.is_empty()).then_some(Compiled { cubin, ptx, cached: true })
}

fn write_cached(dir: &Path, name: &str, key: u64, c: &Compiled) -> Result<()> {
    let err = |e: std::io::Error| CudaError::Cache { path: dir.to_path_buf(), msg: e.to_string() };
    std::fs::create_dir_all(dir).map_err(err)?;
    for (ext, bytes) in [("ptx", c.ptx.as_bytes()), ("cubin", c.cubin.as_slice())] {
        let path = cache_path(dir, name, key, ext);
        let tmp = path.with_extension(format!("{ext}.tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
    }
    Ok(())
}

/// FNV-1a, 64-bit: a hash that is the same on every machine and Rust version.
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Fnv::new()
    }
}
