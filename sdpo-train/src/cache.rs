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
    /// `(chosen, rejected)` per pair, in dataset order.
    pub pairs: Vec<(Vec<f32>, Vec<f32>)>,
}

/// 64-bit FNV-1a, a small stable hash for cache keys.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Feeds a length-prefixed string (so `"ab" + "c"` differs from `"a" + "bc"`).
    pub fn write_str(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        self.0
    }
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

    /// Reads a cache file, checking its magic and key.
    pub fn load(path: &Path, key: u64) -> Result<Self, TrainError> {
        let bad = |reason: String| TrainError::Cache {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io("open", path))?;
        let mut r = BufReader::new(file);
        let mut buf8 = [0u8; 8];
        let mut read8 = |r: &mut BufReader<File>| -> Result<[u8; 8], TrainError> {
            r.read_exact(&mut buf8)
                .map_err(|e| bad(format!("truncated file ({e})")))?;
            Ok(buf8)
        };
        if &read8(&mut r)? != MAGIC {
            return Err(bad("not an sdpo-rs reference cache".into()));
        }
        let stored_key = u64::from_le_bytes(read8(&mut r)?);
        if stored_key != key {
            return Err(bad(format!(
                "key {stored_key:016x} does not match the expected {key:016x}"
            )));
        }
        let count = u64::from_le_bytes(read8(&mut r)?) as usize;
        let mut pairs = Vec::with_capacity(count.min(1 << 24));
        let read_side = |r: &mut BufReader<File>| -> Result<Vec<f32>, TrainError> {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)
                .map_err(|e| bad(format!("truncated file ({e})")))?;
            let n = u32::from_le_bytes(len) as usize;
            let mut bytes = vec![0u8; n * 4];
            r.read_exact(&mut bytes)
                .map_err(|e| bad(format!("truncated file ({e})")))?;
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        for _ in 0..count {
            let chosen = read_side(&mut r)?;
            let rejected = read_side(&mut r)?;
            pairs.push((chosen, rejected));
        }
        Ok(Self { key, pairs })
    }
}
