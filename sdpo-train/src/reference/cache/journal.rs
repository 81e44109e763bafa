//! The progress of a cache being computed: each finished batch is appended to
//! `<file>.partial` with a checksum, so that a process killed halfway restarts after its last
//! whole batch instead of from the start.
//!
//! Layout: one text line naming what is computed (key, split, shard, pairs, batch size), then
//! per batch `u32` pairs, per pair `u32 n`, `n x f32` (chosen), `u32 m`, `m x f32` (rejected),
//! then the `u64` FNV-1a of the batch's bytes (little endian). A torn or damaged tail is cut off.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sdpo_data::Fnv1a;

use super::file::PairLogps;
use crate::error::{TrainError, io};

/// An open progress file.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

/// What opening a journal found.
#[derive(Debug)]
pub struct Resumed {
    /// The journal, positioned after its last whole batch.
    pub journal: Journal,
    /// The pairs of the whole batches already computed.
    pub pairs: Vec<PairLogps>,
    /// Why earlier progress was dropped, if it was.
    pub dropped: Option<String>,
}

impl Journal {
    /// The progress file of the cache file `target`.
    pub fn path_of(target: &Path) -> PathBuf {
        let mut name = target.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    }

    /// Opens (or starts) the progress file of `target` for the computation `tag` (one line
    /// that names it): the batches a file of the same tag holds are kept, a damaged tail is cut,
    /// and a file of another tag is started over.
    pub fn open(target: &Path, tag: &str) -> Result<Resumed, TrainError> {
        let path = Self::path_of(target);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        // One process per computation: a second one (the same shard started twice) would
        // interleave its batches with the first's and remove the file under it.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(TrainError::Cache {
                    path,
                    reason: "another process is computing this cache (its progress file is \
                             locked): wait for it to finish or stop it"
                        .to_string(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io("lock", &path)(source)),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read", &path))?;
        let header = format!("{tag}\n");
        let mut dropped = None;
        let mut pairs = Vec::new();
        let mut keep = 0u64;
        if bytes.starts_with(header.as_bytes()) {
            keep = header.len() as u64;
            let mut at = header.len();
            while let Some((batch, end)) = read_batch(&bytes, at) {
                pairs.extend(batch);
                at = end;
                keep = end as u64;
            }
            if (keep as usize) < bytes.len() {
                dropped = Some(format!(
                    "`{}`: a damaged or torn last batch ({} bytes) was dropped",
                    path.display(),
                    bytes.len() - keep as usize
                ));
            }
        } else if !bytes.is_empty() {
            dropped = Some(format!(
                "`{}` is the progress of another computation: started over",
                path.display()
            ));
        }
        if keep == 0 {
            file.set_len(0).map_err(io("write", &path))?;
            file.seek(SeekFrom::Start(0)).map_err(io("write", &path))?;
            file.write_all(header.as_bytes())
                .map_err(io("write", &path))?;
        } else {
            file.set_len(keep).map_err(io("write", &path))?;
            file.seek(SeekFrom::Start(keep))
                .map_err(io("write", &path))?;
        }
        Ok(Resumed {
            journal: Self { file, path },
            pairs,
            dropped,
        })
    }

    /// Appends one finished batch and flushes it.
    pub fn append(&mut self, batch: &[PairLogps]) -> Result<(), TrainError> {
        let mut bytes = (batch.len() as u32).to_le_bytes().to_vec();
        for (chosen, rejected) in batch {
            for side in [chosen, rejected] {
                bytes.extend((side.len() as u32).to_le_bytes());
                bytes.extend(side.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        let mut h = Fnv1a::new();
        h.write(&bytes);
        bytes.extend(h.finish().to_le_bytes());
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .map_err(io("write", &self.path))
    }

    /// Deletes the progress file (the cache file is written), then releases its lock.
    pub fn finish(self) -> Result<(), TrainError> {
        std::fs::remove_file(&self.path).map_err(io("remove", &self.path))
    }
}

/// The batch at `at` and where it ends, if it is whole and its checksum holds.
fn read_batch(bytes: &[u8], at: usize) -> Option<(Vec<PairLogps>, usize)> {
    let mut r = Cursor { bytes, at };
    let n = r.u32()?;
    let mut batch = Vec::new();
    for _ in 0..n {
        let mut sides: [Vec<f32>; 2] = Default::default();
        for side in &mut sides {
            let len = r.u32()? as usize;
            let raw = r.take(len.checked_mul(4)?)?;
            *side = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
        let [c, rj] = sides;
        batch.push((c, rj));
    }
    let end = r.at;
    let stored = r.take(8)?;
    let mut h = Fnv1a::new();
    h.write(&bytes[at..end]);
    (h.finish().to_le_bytes() == stored).then_some((batch, r.at))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Reads a whole file (used by tests of the torn tail).
#[cfg(test)]
fn read_all(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map(|_| bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seed: f32, n: usize) -> Vec<PairLogps> {
        (0..n)
            .map(|i| (vec![seed + i as f32; i + 1], vec![-seed; 2]))
            .collect()
    }

    #[test]
    fn a_killed_computation_keeps_its_whole_batches_and_drops_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("train-x.safetensors");
        let mut r = Journal::open(&target, "tag a").unwrap();
        assert!(r.pairs.is_empty() && r.dropped.is_none());
        r.journal.append(&batch(1.0, 2)).unwrap();
        r.journal.append(&batch(5.0, 3)).unwrap();
        drop(r);
        // A third batch cut halfway, as a kill during the write leaves it.
        let path = Journal::path_of(&target);
        let whole = read_all(&path);
        let mut r = Journal::open(&target, "tag a").unwrap();
        r.journal.append(&batch(9.0, 2)).unwrap();
        drop(r);
        let full = read_all(&path);
        std::fs::write(&path, &full[..whole.len() + (full.len() - whole.len()) / 2]).unwrap();
        let r = Journal::open(&target, "tag a").unwrap();
        assert_eq!(r.pairs, [batch(1.0, 2), batch(5.0, 3)].concat());
        assert!(r.dropped.unwrap().contains("torn"));
        drop(r.journal);
        assert_eq!(read_all(&path), whole, "the torn tail is cut off");
        // A flipped byte fails the checksum: that batch and what follows are dropped.
        let mut damaged = whole.clone();
        let last = damaged.len() - 12;
        damaged[last] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        let r = Journal::open(&target, "tag a").unwrap();
        assert_eq!(r.pairs, batch(1.0, 2));
        drop(r);
        // A second process on the same computation is refused while the first holds it.
        let first = Journal::open(&target, "tag a").unwrap();
        let err = Journal::open(&target, "tag a").unwrap_err().to_string();
        assert!(
            err.contains("another process") && err.contains(".partial"),
            "{err}"
        );
        drop(first);
        // Another computation's progress is never reused.
        let r = Journal::open(&target, "tag b").unwrap();
        assert!(r.pairs.is_empty());
        assert!(r.dropped.unwrap().contains("another computation"));
        r.journal.finish().unwrap();
        assert!(!path.exists());
    }
}
