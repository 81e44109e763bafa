//! The precomputed reference cache: per-token reference log-probs of every pair, computed once,
//! so training runs without the reference model in memory.
//!
//! SDPO needs the reference's log-prob of every completion token (the selection scores), not
//! just sequence sums; the SDPO fork stored sums and silently fell back to plain DPO. The file
//! holds, for every pair in dataset order, the chosen and the rejected completion tokens'
//! log-probs (after truncation). It is keyed by a hash of the tokenized data, the tokenization
//! settings and the reference weights, so a stale cache is recomputed, never reused.
//!
//! Layout (little endian): `b"SDPOREF1"`, `u64` key, `u64` pairs, then per pair `u32 n`,
//! `n x f32` (chosen), `u32 m`, `m x f32` (rejected).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{TrainError, io};

const MAGIC: &[u8; 8] = b"SDPOREF1";

/// Reference log-probs of the completion tokens of every pair.
#[derive(Debug, Clone, PartialEq)]
pub struct RefLogpsCache {
    /// The key the cache was computed for.
    pub key: u64,
    /// The file it was read from or will be saved to (named in errors).
    pub path: PathBuf,
    /// `(chosen, rejected)` per pair, in dataset order.
    pub pairs: Vec<(Vec<f32>, Vec<f32>)>,
}

impl RefLogpsCache {
    /// The cache file for `split` (`train`, `eval`) under `output_dir`.
    pub fn path(output_dir: &Path, split: &str, key: u64) -> PathBuf {
        output_dir
            .join("ref_logps_cache")
            .join(format!("{split}-{key:016x}.bin"))
    }

    /// Writes the cache atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        }
        let tmp = path.with_extension("bin.tmp");
        let file = File::create(&tmp).map_err(io("create", &tmp))?;
        let mut w = BufWriter::new(file);
        let mut put = |bytes: &[u8]| w.write_all(bytes).map_err(io("write", &tmp));
        put(MAGIC)?;
        put(&self.key.to_le_bytes())?;
        put(&(self.pairs.len() as u64).to_le_bytes())?;
        for (chosen, rejected) in &self.pairs {
            for side in [chosen, rejected] {
                put(&(side.len() as u32).to_le_bytes())?;
                for v in side {
                    put(&v.to_le_bytes())?;
                }
            }
        }
        w.flush().map_err(io("write", &tmp))?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(io("rename into place", path))
    }

    /// Reads a cache file, checking its magic, its key and that every length it declares fits
    /// in the file (a corrupted length is an error, never a huge allocation).
    pub fn load(path: &Path, key: u64) -> Result<Self, TrainError> {
        let bad = |reason: String| TrainError::Cache {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io("open", path))?;
        let file_len = file.metadata().map_err(io("read", path))?.len();
        let mut r = BoundedReader {
            inner: BufReader::new(file),
            remaining: file_len,
        };
        let header = r.read_vec(24).map_err(bad)?;
        if &header[..8] != MAGIC {
            return Err(bad("not an sdpo-rs reference cache".into()));
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&header[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let stored_key = word(8);
        if stored_key != key {
            return Err(bad(format!(
                "key {stored_key:016x} does not match the expected {key:016x}"
            )));
        }
        let count = word(16);
        // Every pair takes at least its two 4-byte lengths.
        let most = r.remaining / 8;
        if count > most {
            return Err(bad(format!(
                "declares {count} pairs but holds at most {most}"
            )));
        }
        let mut pairs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let mut sides = [Vec::new(), Vec::new()];
            for side in &mut sides {
                let len = r.read_vec(4).map_err(bad)?;
                let n = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
                let bytes = r.read_vec(u64::from(n) * 4).map_err(bad)?;
                *side = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
            }
            let [chosen, rejected] = sides;
            pairs.push((chosen, rejected));
        }
        if r.remaining != 0 {
            return Err(bad(format!(
                "{} unexpected bytes after the last pair",
                r.remaining
            )));
        }
        Ok(Self {
            key,
            path: path.to_path_buf(),
            pairs,
        })
    }
}

/// Reads a file front to back, refusing any read longer than what is left, so that a corrupted
/// length field cannot make it allocate more than the file holds.
struct BoundedReader {
    inner: BufReader<File>,
    remaining: u64,
}

impl BoundedReader {
    fn read_vec(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if n > self.remaining {
            return Err(format!(
                "truncated or corrupted: {n} more bytes declared, {} left",
                self.remaining
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("truncated file ({e})"))?;
        self.remaining -= n;
        Ok(buf)
    }
}
