//! One reference-cache file: safetensors with four tensors and a header of text fields
//! (docs/reference-cache.md). Written atomically; read with every length, offset and value
//! checked, so that a damaged or hostile file is an error naming it, never a panic or a huge
//! allocation.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use super::key::CacheKey;
use super::shard::Shard;
use crate::error::{TrainError, io};

/// The `format` field of every cache file.
pub const FORMAT: &str = "sdpo-ref-logps";
/// The `format_version` this sdpo-rs writes and reads.
pub const FORMAT_VERSION: &str = "2";
/// The magic of the format before version 2 (refused).
const OLD_MAGIC: &[u8; 8] = b"SDPOREF1";
/// The longest header read (safetensors' own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Per pair, the chosen and the rejected completion tokens' log-probs.
pub type PairLogps = (Vec<f32>, Vec<f32>);

/// What a cache file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHeader {
    /// The key's parts.
    pub key: CacheKey,
    /// `train` or `eval`.
    pub split: String,
    /// Pairs in the whole split.
    pub pairs_total: usize,
    /// The split's index of the file's first pair.
    pub first_pair: usize,
    /// Pairs in the file.
    pub pair_count: usize,
    /// Which shard of how many the file is (`0/1` for a whole split).
    pub shard: Shard,
    /// The program that computed the log-probs (informational).
    pub producer: String,
}

impl CacheHeader {
    /// The header as safetensors metadata.
    fn to_metadata(&self) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = self
            .key
            .parts()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        for (name, value) in [
            ("format", FORMAT.to_string()),
            ("format_version", FORMAT_VERSION.to_string()),
            ("key", self.key.key()),
            ("content_key", self.key.content_key()),
            ("split", self.split.clone()),
            ("pairs_total", self.pairs_total.to_string()),
            ("first_pair", self.first_pair.to_string()),
            ("pair_count", self.pair_count.to_string()),
            ("shard", self.shard.to_string()),
            ("producer", self.producer.clone()),
        ] {
            m.insert(name.to_string(), value);
        }
        m
    }

    /// Reads and checks the header fields; the digests must be those of the parts.
    fn from_metadata(m: &HashMap<String, String>) -> Result<Self, String> {
        let field = |name: &str| {
            m.get(name)
                .map(String::as_str)
                .ok_or_else(|| format!("its header has no `{name}`"))
        };
        if field("format").ok() != Some(FORMAT) {
            return Err(format!(
                "not an {FORMAT} file (no `format = {FORMAT}` in its header)"
            ));
        }
        let version = field("format_version")?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}; this sdpo-rs reads version {FORMAT_VERSION}: delete \
                 it and recompute it (`sdpo precompute-ref`)"
            ));
        }
        let key = CacheKey::from_metadata(m)?;
        for (name, expected) in [("key", key.key()), ("content_key", key.content_key())] {
            if field(name)? != expected {
                return Err(format!(
                    "its `{name}` is not the SHA-256 of its parts (expected {expected})"
                ));
            }
        }
        let number = |name: &str| {
            field(name)?
                .parse::<usize>()
                .map_err(|_| format!("`{name}` is not a count"))
        };
        let header = Self {
            key,
            split: field("split")?.to_string(),
            pairs_total: number("pairs_total")?,
            first_pair: number("first_pair")?,
            pair_count: number("pair_count")?,
            shard: field("shard")?
                .parse()
                .map_err(|e| format!("`shard`: {e}"))?,
            producer: m.get("producer").cloned().unwrap_or_default(),
        };
        if header
            .first_pair
            .checked_add(header.pair_count)
            .is_none_or(|end| end > header.pairs_total)
        {
            return Err(format!(
                "pairs {}..{}+{} lie outside the split's {} pairs",
                header.first_pair, header.first_pair, header.pair_count, header.pairs_total
            ));
        }
        Ok(header)
    }
}

/// Writes a cache file atomically (a temporary file, then rename).
pub fn write(path: &Path, header: &CacheHeader, pairs: &[PairLogps]) -> Result<(), TrainError> {
    if pairs.len() != header.pair_count {
        return Err(TrainError::Cache {
            path: path.to_path_buf(),
            reason: format!(
                "{} pairs given for a header of {}",
                pairs.len(),
                header.pair_count
            ),
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    }
    let bytes = encode(header, pairs);
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))
}

/// The file's bytes: safetensors with its header's keys in sorted order and the tensors in a
/// fixed order, so the same cache is always the same bytes (shards merged or computed in one
/// process compare byte for byte).
fn encode(header: &CacheHeader, pairs: &[PairLogps]) -> Vec<u8> {
    let mut json = serde_json::Map::new();
    let metadata: serde_json::Map<String, serde_json::Value> = header
        .to_metadata()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::from(v)))
        .collect();
    json.insert("__metadata__".into(), serde_json::Value::Object(metadata));
    let mut data: Vec<u8> = Vec::new();
    for (name, side) in [("chosen", 0), ("rejected", 1)] {
        let mut values = Vec::new();
        let mut offsets = vec![0i64];
        for pair in pairs {
            let v = if side == 0 { &pair.0 } else { &pair.1 };
            values.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            offsets.push(offsets[offsets.len() - 1] + v.len() as i64);
        }
        let offsets: Vec<u8> = offsets.iter().flat_map(|x| x.to_le_bytes()).collect();
        for (tensor, bytes, dtype, width) in [
            (format!("{name}_logps"), values, "F32", 4),
            (format!("{name}_offsets"), offsets, "I64", 8),
        ] {
            let start = data.len();
            data.extend_from_slice(&bytes);
            json.insert(
                tensor,
                serde_json::json!({
                    "dtype": dtype,
                    "shape": [bytes.len() / width],
                    "data_offsets": [start, data.len()],
                }),
            );
        }
    }
    let mut text = serde_json::Value::Object(json).to_string().into_bytes();
    // Padded with spaces to a multiple of 8 bytes, as safetensors aligns its data.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    out
}

/// Reads only the header of a cache file (the tensors are not read).
pub fn read_header(path: &Path) -> Result<CacheHeader, TrainError> {
    let bad = |reason: String| TrainError::Cache {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(io("open", path))?;
    let file_len = file.metadata().map_err(io("read", path))?.len();
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)
        .map_err(|_| bad(format!("{file_len} bytes: too short for a header")))?;
    refuse_old_format(&prefix).map_err(bad)?;
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES || n > file_len - 8 {
        return Err(bad(format!(
            "declares a {n}-byte header in a {file_len}-byte file"
        )));
    }
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json).map_err(io("read", path))?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| bad(format!("header: {e}")))?;
    let metadata: HashMap<String, String> = value
        .get("__metadata__")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad(format!("header `__metadata__`: {e}")))?
        .unwrap_or_default();
    CacheHeader::from_metadata(&metadata).map_err(bad)
}

/// Reads a cache file: its header and every pair's log-probs.
pub fn read(path: &Path) -> Result<(CacheHeader, Vec<PairLogps>), TrainError> {
    let bad = |reason: String| TrainError::Cache {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    if let Some(prefix) = bytes.get(..8) {
        refuse_old_format(prefix).map_err(bad)?;
    }
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let header = CacheHeader::from_metadata(&metadata.metadata().clone().unwrap_or_default())
        .map_err(bad)?;
    let mut sides: [Vec<Vec<f32>>; 2] = Default::default();
    for (side, name) in ["chosen", "rejected"].into_iter().enumerate() {
        let values = column(&tensors, &format!("{name}_logps"), Dtype::F32).map_err(bad)?;
        let values: Vec<f32> = values
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let offsets = column(&tensors, &format!("{name}_offsets"), Dtype::I64).map_err(bad)?;
        let offsets: Vec<i64> = offsets
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if Some(offsets.len()) != header.pair_count.checked_add(1) {
            return Err(bad(format!(
                "`{name}_offsets` has {} entries for {} pairs (expected one more)",
                offsets.len(),
                header.pair_count,
            )));
        }
        if offsets[0] != 0 || offsets[offsets.len() - 1] != values.len() as i64 {
            return Err(bad(format!(
                "`{name}_offsets` must run from 0 to {} (the length of `{name}_logps`)",
                values.len()
            )));
        }
        for (i, w) in offsets.windows(2).enumerate() {
            // Each offset is checked against the values before it is used: the last one equals
            // the length, but one in the middle may still pass it.
            if w[1] < w[0] || w[1] > values.len() as i64 {
                return Err(bad(format!(
                    "`{name}_offsets` decreases or passes the end of `{name}_logps` at pair {}",
                    header.first_pair.saturating_add(i)
                )));
            }
            let span = &values[w[0] as usize..w[1] as usize];
            if let Some(bad_value) = span.iter().find(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "`{name}_logps` of pair {} holds {bad_value}",
                    header.first_pair.saturating_add(i)
                )));
            }
            sides[side].push(span.to_vec());
        }
    }
    let [chosen, rejected] = sides;
    Ok((header, chosen.into_iter().zip(rejected).collect()))
}

/// The bytes of a 1-D tensor `name` of `dtype`.
fn column<'a>(tensors: &SafeTensors<'a>, name: &str, dtype: Dtype) -> Result<&'a [u8], String> {
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("it has no tensor `{name}`"))?;
    if view.dtype() != dtype || view.shape().len() != 1 {
        return Err(format!(
            "`{name}` is {:?} of shape {:?}; expected a 1-D {dtype:?} tensor",
            view.dtype(),
            view.shape()
        ));
    }
    Ok(view.data())
}

/// A file of the format before version 2 is refused with what to do.
fn refuse_old_format(prefix: &[u8]) -> Result<(), String> {
    if prefix == OLD_MAGIC {
        return Err(
            "an SDPOREF1 reference cache of an older sdpo-rs, no longer read: delete it and \
             recompute it (`sdpo precompute-ref`, or train with precompute_ref_log_probs)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pairs: usize) -> CacheHeader {
        let metadata: HashMap<String, String> = super::super::KEY_PART_NAMES
            .iter()
            .map(|n| (n.to_string(), format!("value of {n}")))
            .collect();
        CacheHeader {
            key: CacheKey::from_metadata(&metadata).unwrap(),
            split: "train".into(),
            pairs_total: pairs + 3,
            first_pair: 3,
            pair_count: pairs,
            shard: Shard { index: 1, count: 2 },
            producer: "test".into(),
        }
    }

    #[test]
    fn a_file_reads_back_as_written_and_its_bytes_depend_only_on_its_content() {
        let dir = tempfile::tempdir().unwrap();
        for pairs in [
            vec![],
            vec![(vec![-0.5f32, -1e-30, -20.0], vec![])],
            vec![(vec![-1.0], vec![-2.0, -3.0]), (vec![], vec![-0.25])],
        ] {
            let path = dir.path().join("c.safetensors");
            let header = header(pairs.len());
            write(&path, &header, &pairs).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            // A standard safetensors file: its parser accepts it.
            let tensors = SafeTensors::deserialize(&bytes).unwrap();
            assert_eq!(tensors.len(), 4);
            assert_eq!(read_header(&path).unwrap(), header);
            let (read_back, values) = read(&path).unwrap();
            assert_eq!(read_back, header);
            assert_eq!(values, pairs);
            write(&path, &header, &pairs).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
        let path = dir.path().join("c.safetensors");
        let err = write(&path, &header(2), &[]).unwrap_err().to_string();
        assert!(err.contains("0 pairs given for a header of 2"), "{err}");
    }
}
