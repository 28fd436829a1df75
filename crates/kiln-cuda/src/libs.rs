//! Finding the CUDA libraries at run time. cudarc loads them by name through the system
//! loader; when that fails, Kiln looks in the usual install places (CUDA_HOME and
//! CUDA_PATH, /usr/local/cuda*, the distribution's library folder, the `nvidia-*` pip
//! packages' `lib` folders) and preloads the library from there, so that the loader
//! then finds it by its soname. Nothing here panics: a library that is nowhere is an
//! error that names it and every folder searched.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{CudaError, Result};

/// A CUDA library Kiln uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    Driver,
    Nvrtc,
    CublasLt,
    Cudnn,
}

impl Lib {
    pub fn what(self) -> &'static str {
        match self {
            Lib::Driver => "the CUDA driver",
            Lib::Nvrtc => "NVRTC (CUDA's runtime compiler)",
            Lib::CublasLt => "cuBLASLt",
            Lib::Cudnn => "cuDNN",
        }
    }

    /// File name prefix (`libX.so`).
    pub fn file(self) -> &'static str {
        match self {
            Lib::Driver => "libcuda.so",
            Lib::Nvrtc => "libnvrtc.so",
            Lib::CublasLt => "libcublasLt.so",
            Lib::Cudnn => "libcudnn.so",
        }
    }

    /// The pip package folder under `site-packages/nvidia/` that ships it.
    fn pip_package(self) -> Option<&'static str> {
        match self {
            Lib::Driver => None,
            Lib::Nvrtc => Some("cuda_nvrtc"),
            Lib::CublasLt => Some("cublas"),
            Lib::Cudnn => Some("cudnn"),
        }
    }

    fn present(self) -> bool {
        // SAFETY: these only try to dlopen candidate names.
        unsafe {
            match self {
                Lib::Driver => cudarc::driver::sys::is_culib_present(),
                Lib::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                Lib::CublasLt => cudarc::cublaslt::sys::is_culib_present(),
                Lib::Cudnn => cudarc::cudnn::sys::is_culib_present(),
            }
        }
    }
}

/// Makes `lib` loadable, or says where it was looked for.
pub fn ensure(lib: Lib) -> Result<()> {
    static CHECKED: [OnceLock<std::result::Result<(), Vec<PathBuf>>>; 4] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = &CHECKED[lib as usize];
    slot.get_or_init(|| find(lib)).clone().map_err(|searched| CudaError::LibraryMissing {
        what: lib.what(),
        file: lib.file(),
        searched,
    })
}

fn find(lib: Lib) -> std::result::Result<(), Vec<PathBuf>> {
    if lib.present() {
        return Ok(());
    }
    let dirs = search_dirs(lib);
    for dir in &dirs {
        for file in candidates(dir, lib.file()) {
            if preload(&file) && lib.present() {
                return Ok(());
            }
        }
    }
    Err(dirs)
}

/// Files in `dir` named `prefix` or `prefix.N…`, newest version first.
fn candidates(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == prefix || n.starts_with(&format!("{prefix}.")))
        })
        .collect();
    found.sort();
    found.reverse();
    found
}

/// Loads `path` with global symbols and keeps it loaded for the process's life.
fn preload(path: &Path) -> bool {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading a CUDA library runs its initialisers, as loading it by name would.
    match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(l) => {
            std::mem::forget(l);
            true
        }
        Err(_) => false,
    }
}

/// Where to look, in order.
pub fn search_dirs(lib: Lib) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    for root in cuda_roots() {
        dirs.push(root.join("lib64"));
        dirs.push(root.join("lib"));
        dirs.push(root.join("targets/x86_64-linux/lib"));
    }
    dirs.extend(
        ["/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib"].map(PathBuf::from),
    );
    if let Some(pkg) = lib.pip_package() {
        for site in site_packages() {
            dirs.push(site.join("nvidia").join(pkg).join("lib"));
        }
    }
    dirs.retain(|d| d.is_dir());
    dirs.dedup();
    dirs
}

/// CUDA toolkit roots: CUDA_HOME, CUDA_PATH, /usr/local/cuda, /usr/local/cuda-* (newest first).
pub fn cuda_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> =
        ["CUDA_HOME", "CUDA_PATH"].iter().filter_map(std::env::var_os).map(PathBuf::from).collect();
    roots.push(PathBuf::from("/usr/local/cuda"));
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/local")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("cuda-")))
                .collect()
        })
        .unwrap_or_default();
    versioned.sort();
    versioned.reverse();
    roots.extend(versioned);
    roots.retain(|r| r.is_dir());
    roots
}

/// Python site-packages folders that may hold `nvidia-*` wheels.
fn site_packages() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(v));
    }
    if let Some(h) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(h).join(".local"));
    }
    roots.extend(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));
    if let Ok(rd) = std::fs::read_dir("/opt") {
        roots.extend(rd.flatten().map(|e| e.path().join(".venv")));
    }
    let mut out = Vec::new();
    for root in roots {
        let Ok(rd) = std::fs::read_dir(root.join("lib")) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")) {
                out.push(p.join("site-packages"));
                out.push(p.join("dist-packages"));
            }
        }
    }
    out.retain(|p| p.is_dir());
    out
}

/// The versions of CUDA's libraries as loaded here (for timing-cache keys and plan files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LibVersions {
    /// The driver API version, e.g. 13000.
    pub driver: i32,
    /// NVRTC's (major, minor); (0, 0) when NVRTC does not load (a plan's cubins need none).
    pub nvrtc: (i32, i32),
    /// `None` when the library does not load.
    pub cublaslt: Option<usize>,
    pub cudnn: Option<usize>,
}

/// The libraries' versions. Only a missing driver is an error; another library that
/// does not load is reported as absent.
pub fn lib_versions() -> Result<LibVersions> {
    ensure(Lib::Driver)?;
    let mut driver = 0;
    // SAFETY: the driver is loaded (ensure); cuDriverGetVersion needs no cuInit.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) }
        .result()
        .map_err(|e| CudaError::driver("reading the driver version", e))?;
    let nvrtc = match ensure(Lib::Nvrtc) {
        Ok(()) => crate::nvrtc::nvrtc_version().unwrap_or((0, 0)),
        Err(_) => (0, 0),
    };
    // SAFETY: cuBLASLt is loaded (ensure); the call takes no arguments.
    let cublaslt = ensure(Lib::CublasLt).ok().map(|()| unsafe { cudarc::cublaslt::sys::cublasLtGetVersion() });
    let cudnn = crate::dnn::Dnn::version().ok();
    Ok(LibVersions { driver, nvrtc, cublaslt, cudnn })
}
