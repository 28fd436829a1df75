//! NumPy `.npy` files (format versions 1–3, C order, little-endian): model inputs in,
//! outputs out.

use std::path::Path;

use anyhow::{Context, bail};
use kiln_ir::{DType, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        DType::BF16 | DType::F8E4M3FN | DType::F8E5M2 => return None,
    })
}

fn dtype_of(d: &str) -> Option<DType> {
    let d = d.replace('=', "<");
    DType::ALL.into_iter().find(|&t| descr(t).is_some_and(|x| x == d || x.replace('|', "<") == d))
}

pub fn write(path: &Path, t: &Tensor) -> anyhow::Result<()> {
    let d = descr(t.dtype()).with_context(|| format!("{} tensors cannot be written as .npy", t.dtype()))?;
    let shape = match t.shape() {
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with '\n'.
    let total = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(total + t.bytes().len() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

pub fn read(path: &Path) -> anyhow::Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{}: not a valid .npy file", path.display()))
}

fn parse(bytes: &[u8]) -> anyhow::Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("missing the NumPy magic bytes");
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => bail!("unsupported format version {v}"),
    };
    let header = bytes.get(start..start + len).context("truncated header")?;
    let header = std::str::from_utf8(header).context("header is not text")?;
    let field = |key: &str| -> anyhow::Result<&str> {
        let at = header.find(&format!("'{key}'")).with_context(|| format!("header has no '{key}'"))?;
        let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':').context("malformed header")?;
        Ok(rest.trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).context("malformed descr")?;
    let dtype = dtype_of(descr).with_context(|| format!("unsupported dtype '{descr}'"))?;
    if field("fortran_order")?.starts_with("True") {
        bail!("Fortran-order arrays are not supported; save with np.ascontiguousarray");
    }
    let shape_text = field("shape")?;
    let shape_text = shape_text.strip_prefix('(').and_then(|s| s.split(')').next()).context("malformed shape")?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().with_context(|| format!("bad dimension '{s}'")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let data = &bytes[start + len..];
    Ok(Tensor::from_bytes(dtype, shape, bytes_of(data))?)
}

fn bytes_of(data: &[u8]) -> kiln_ir::tensor::Bytes {
    kiln_ir::tensor::Bytes::copy_from_slice(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for t in [
            Tensor::from_vec(vec![2, 3], vec![1.5f32, -2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
            Tensor::from_vec(vec![3], vec![1i64, -2, 3]).unwrap(),
            Tensor::from_bools(vec![2], vec![true, false]).unwrap(),
            Tensor::scalar(7i32),
        ] {
            let p = dir.join("t.npy");
            write(&p, &t).unwrap();
            assert_eq!(read(&p).unwrap(), t);
        }
        assert!(parse(b"\x93NUMPY\x01\x00\x05\x00{'de").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
