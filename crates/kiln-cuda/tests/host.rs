//! What runs without a GPU: library discovery errors (never a panic), broadcast strides,
//! the kernel cache's hash.

use kiln_cuda::kernels::{MAX_RANK, Strides};
use kiln_cuda::libs::{self, Lib};
use kiln_cuda::nvrtc::Fnv;
use kiln_cuda::{CudaError, Device};

#[test]
fn no_driver_is_an_error_naming_the_library() {
    match Device::open(0) {
        Ok(d) => eprintln!("a GPU is present: {} ({})", d.name, d.arch()),
        Err(CudaError::LibraryMissing { file, what, .. }) => {
            assert_eq!(file, "libcuda.so");
            assert!(what.contains("driver"));
            let msg = Device::open(0).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("libcuda.so") && msg.contains("looked in"), "{msg}");
        }
        Err(CudaError::NoDevice(msg)) => eprintln!("driver without a GPU: {msg}"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn missing_nvrtc_is_an_error_not_a_panic() {
    if libs::ensure(Lib::Nvrtc).is_ok() {
        return;
    }
    let err = kiln_cuda::nvrtc::Compiler::new("sm_90").err().expect("no NVRTC here");
    assert!(err.to_string().contains("libnvrtc.so"), "{err}");
}

#[test]
fn strides_broadcast_like_numpy() {
    let s = Strides::broadcast(&[3, 1], &[4], &[3, 4]).expect("broadcasts");
    assert_eq!(&s.out_dims[..2], &[3, 4]);
    assert_eq!(&s.a[..2], &[1, 0]);
    assert_eq!(&s.b[..2], &[0, 1]);
    assert!(Strides::broadcast(&[3], &[4], &[4]).is_none());
    assert!(Strides::broadcast(&[1; MAX_RANK + 1], &[1], &[1; MAX_RANK + 1]).is_none());
}

#[test]
fn cache_key_hash_is_stable() {
    let mut h = Fnv::new();
    h.write(b"kiln");
    let mut g = Fnv::new();
    g.write(b"ki");
    g.write(b"ln");
    assert_ne!(h.finish(), g.finish());
    let mut k = Fnv::new();
    k.write(b"kiln");
    assert_eq!(h.finish(), k.finish());
}
