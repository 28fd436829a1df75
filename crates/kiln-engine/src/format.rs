//! The plan container: a fixed header, a section table, and sections aligned to 256
//! bytes (docs/PLAN-FORMAT.md describes it byte by byte).
//!
//! ```text
//! 0   8  magic "KILNPLAN"
//! 8   4  format version (u32 LE)
//! 12  4  section count (u32 LE)
//! 16  8  file length in bytes (u64 LE)
//! 24  4  CRC-32 of the whole file with these 4 bytes read as zero (u32 LE)
//! 28 36  reserved, zero
//! 64     section table: per section a 16-byte ASCII tag (zero padded), offset u64, length u64
//! ```
//!
//! Parsing never trusts a number from the file: every offset and length is checked
//! against the file's size before a byte is read, and the checksum is checked before
//! any section is decoded, so a damaged file is an error, never a panic or a read out of
//! bounds.

use bytes::Bytes;

use crate::{EngineError, Result};

pub const MAGIC: &[u8; 8] = b"KILNPLAN";
/// Bumped whenever the layout of the container or of a section changes.
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;
const ENTRY_BYTES: usize = 32;
const TAG_BYTES: usize = 16;
/// Sections (and the weight blobs inside theirs) start on this boundary, so that a
/// mapped file can be viewed as any element type and copied to the GPU as it is.
pub const ALIGN: usize = 256;
const CRC_AT: usize = 24;
/// More sections than any plan has: a corrupt count is refused before allocating.
const MAX_SECTIONS: u32 = 64;

/// A section being written: its tag and bytes.
pub struct Section {
    pub tag: String,
    pub bytes: Vec<u8>,
}

/// The whole file for `sections`, checksummed.
pub fn write(sections: &[Section]) -> Vec<u8> {
    let table_end = HEADER_BYTES + ENTRY_BYTES * sections.len();
    let mut offsets = Vec::with_capacity(sections.len());
    let mut end = table_end;
    for s in sections {
        let at = end.next_multiple_of(ALIGN);
        offsets.push(at);
        end = at + s.bytes.len();
    }
    let mut out = vec![0u8; end];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&(end as u64).to_le_bytes());
    for (i, (s, &at)) in sections.iter().zip(&offsets).enumerate() {
        let e = HEADER_BYTES + i * ENTRY_BYTES;
        let tag = s.tag.as_bytes();
        out[e..e + tag.len().min(TAG_BYTES)].copy_from_slice(&tag[..tag.len().min(TAG_BYTES)]);
        out[e + 16..e + 24].copy_from_slice(&(at as u64).to_le_bytes());
        out[e + 24..e + 32].copy_from_slice(&(s.bytes.len() as u64).to_le_bytes());
        out[at..at + s.bytes.len()].copy_from_slice(&s.bytes);
    }
    let crc = checksum(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// CRC-32 of `file` with the checksum field read as zero.
fn checksum(file: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&file[..CRC_AT]);
    h.update(&[0; 4]);
    h.update(&file[CRC_AT + 4..]);
    h.finalize()
}

/// A parsed container: the file's bytes (usually a mapping) and where each section is.
#[derive(Clone, Debug)]
pub struct Container {
    pub bytes: Bytes,
    pub version: u32,
    sections: Vec<(String, std::ops::Range<usize>)>,
}

impl Container {
    /// Checks the header, the checksum and every section's bounds. `what` names the file.
    pub fn parse(bytes: Bytes, what: &str) -> Result<Container> {
        let container = Self::parse_unchecked(bytes, what)?;
        let stored = u32::from_le_bytes(word(&container.bytes, CRC_AT));
        let actual = checksum(&container.bytes);
        if stored != actual {
            return Err(EngineError::Corrupt(format!(
                "{what}: checksum mismatch (stored {stored:08x}, computed {actual:08x}): the file is damaged"
            )));
        }
        Ok(container)
    }

    /// `parse` without the checksum (for tests that corrupt a file and fix its checksum,
    /// to reach the decoders behind it).
    pub fn parse_unchecked(bytes: Bytes, what: &str) -> Result<Container> {
        let corrupt = |m: String| EngineError::Corrupt(format!("{what}: {m}"));
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(EngineError::NotAPlan(what.to_string()));
        }
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt(format!("{} bytes, shorter than the {HEADER_BYTES}-byte header", bytes.len())));
        }
        let version = u32::from_le_bytes(word(&bytes, 8));
        if version != FORMAT_VERSION {
            return Err(EngineError::Mismatch(format!(
                "{what} is plan format version {version}; this Kiln reads version {FORMAT_VERSION}: build the plan again"
            )));
        }
        let count = u32::from_le_bytes(word(&bytes, 12));
        let length = u64::from_le_bytes(dword(&bytes, 16));
        if length != bytes.len() as u64 {
            return Err(corrupt(format!("the header says {length} bytes, the file has {} (truncated?)", bytes.len())));
        }
        if count > MAX_SECTIONS {
            return Err(corrupt(format!("{count} sections")));
        }
        let table_end = HEADER_BYTES + ENTRY_BYTES * count as usize;
        if table_end > bytes.len() {
            return Err(corrupt("the section table runs past the end".into()));
        }
        let mut sections = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let e = HEADER_BYTES + i * ENTRY_BYTES;
            let tag_bytes = &bytes[e..e + TAG_BYTES];
            let tag_len = tag_bytes.iter().position(|&b| b == 0).unwrap_or(TAG_BYTES);
            let tag = std::str::from_utf8(&tag_bytes[..tag_len])
                .map_err(|_| corrupt(format!("section {i} has a tag that is not text")))?
                .to_string();
            let offset = u64::from_le_bytes(dword(&bytes, e + 16));
            let len = u64::from_le_bytes(dword(&bytes, e + 24));
            let end = offset.checked_add(len).filter(|&end| end <= bytes.len() as u64);
            match end {
                Some(end) if offset as usize >= table_end => sections.push((tag, offset as usize..end as usize)),
                _ => return Err(corrupt(format!("section '{tag}' ({len} bytes at {offset}) is out of bounds"))),
            }
        }
        Ok(Container { bytes, version, sections })
    }

    /// The bytes of section `tag` (a view of the file), or an error naming it.
    pub fn section(&self, tag: &str) -> Result<Bytes> {
        self.sections
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, r)| self.bytes.slice(r.clone()))
            .ok_or_else(|| EngineError::Corrupt(format!("the plan has no '{tag}' section")))
    }

    pub fn section_sizes(&self) -> Vec<(String, usize)> {
        self.sections.iter().map(|(t, r)| (t.clone(), r.len())).collect()
    }
}

fn word(b: &[u8], at: usize) -> [u8; 4] {
    let mut w = [0; 4];
    w.copy_from_slice(&b[at..at + 4]);
    w
}

fn dword(b: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0; 8];
    w.copy_from_slice(&b[at..at + 8]);
    w
}

/// The file with section `tag` replaced by `bytes` (the others as they were), sealed
/// again: how tests make plans that claim another GPU or Kiln version.
pub fn replace_section(c: &Container, tag: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    let mut sections = Vec::with_capacity(c.sections.len());
    for (t, _) in &c.sections {
        let body = if t == tag { bytes.clone() } else { c.section(t)?.to_vec() };
        sections.push(Section { tag: t.clone(), bytes: body });
    }
    Ok(write(&sections))
}

/// Recomputes the checksum of a file in place (tests: corrupt, then fix the checksum).
pub fn reseal(file: &mut [u8]) {
    if file.len() >= HEADER_BYTES {
        let crc = checksum(file);
        file[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let file = write(&[
            Section { tag: "META".into(), bytes: b"{}".to_vec() },
            Section { tag: "W".into(), bytes: vec![7; 300] },
        ]);
        let c = Container::parse(Bytes::from(file), "t").unwrap();
        assert_eq!(&c.section("META").unwrap()[..], b"{}");
        let w = c.section("W").unwrap();
        assert_eq!(w.len(), 300);
        assert_eq!((w.as_ptr() as usize - c.bytes.as_ptr() as usize) % ALIGN, 0);
        assert!(matches!(c.section("X"), Err(EngineError::Corrupt(_))));
    }

    #[test]
    fn damage_is_reported() {
        let file = write(&[Section { tag: "META".into(), bytes: b"{}".to_vec() }]);
        let mut flipped = file.clone();
        flipped[HEADER_BYTES + 20] ^= 1;
        assert!(matches!(Container::parse(Bytes::from(flipped), "t"), Err(EngineError::Corrupt(_))));
        let truncated = file[..file.len() - 1].to_vec();
        assert!(matches!(Container::parse(Bytes::from(truncated), "t"), Err(EngineError::Corrupt(_))));
        assert!(matches!(Container::parse(Bytes::from_static(b"PK\x03\x04"), "t"), Err(EngineError::NotAPlan(_))));
        let mut other = file;
        other[8] = 9;
        reseal(&mut other);
        assert!(matches!(Container::parse(Bytes::from(other), "t"), Err(EngineError::Mismatch(_))));
    }
}
