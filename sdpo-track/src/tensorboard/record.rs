//! TFRecord framing, the container of an event file: each record is its length (u64, little
//! endian), the masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data.
//! The mask is TensorFlow's (`crc32c.h`): rotate right by 15 bits, add `0xa282ead8`.

use std::path::Path;

use prost::Message;

use crate::error::{TrackError, io};
use crate::tensorboard::proto::Event;

const MASK_DELTA: u32 = 0xa282_ead8;

/// TensorFlow's masked CRC-32C of `bytes`.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// `data` framed as one record.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Splits `bytes` into records, checking both checksums of each. `path` names the file in
/// errors.
///
/// # Errors
/// [`TrackError::EventFile`] naming the byte offset of a truncated record or a bad checksum.
pub fn unframe<'a>(bytes: &'a [u8], path: &Path) -> Result<Vec<&'a [u8]>, TrackError> {
    let bad = |offset: usize, reason: &str| TrackError::EventFile {
        path: path.to_path_buf(),
        reason: format!("record at byte {offset}: {reason}"),
    };
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 12)
            .ok_or_else(|| bad(at, "truncated header"))?;
        // The header is 12 bytes (checked above): 8 of length, 4 of its checksum.
        let (len, rest) = header.split_at(8);
        let stored = u32::from_le_bytes(rest.try_into().expect("4 bytes"));
        if masked_crc32c(len) != stored {
            return Err(bad(at, "length checksum mismatch"));
        }
        let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let n = usize::try_from(n).map_err(|_| bad(at, "length out of range"))?;
        let start = at + 12;
        let end = start
            .checked_add(n)
            .filter(|end| end.checked_add(4).is_some_and(|tail| tail <= bytes.len()))
            .ok_or_else(|| bad(at, "truncated data"))?;
        let data = &bytes[start..end];
        // `end + 4 <= bytes.len()` was checked above.
        let stored = u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes"));
        if masked_crc32c(data) != stored {
            return Err(bad(at, "data checksum mismatch"));
        }
        records.push(data);
        at = end + 4;
    }
    Ok(records)
}

/// Reads every event of an event file (checksums verified).
///
/// # Errors
/// The file cannot be read, a record is damaged, or a record is not an `Event`.
pub fn read_event_file(path: &Path) -> Result<Vec<Event>, TrackError> {
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    unframe(&bytes, path)?
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            Event::decode(data).map_err(|e| TrackError::EventFile {
                path: path.to_path_buf(),
                reason: format!("record {i} is not an Event: {e}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_mask_match_the_published_values() {
        // CRC-32C check value (RFC 3720 appendix B.4): "123456789" -> 0xe3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // TensorFlow's mask, worked by hand: 0xe3069283 rotated right by 15 bits is
        // 0x2507c60d; plus 0xa282ead8 (wrapping) is 0xc78ab0e5.
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn framing_round_trips_and_damage_is_named() {
        let path = Path::new("x.tfevents");
        let mut bytes = frame(b"first");
        bytes.extend(frame(b""));
        bytes.extend(frame(&[7u8; 300]));
        let records = unframe(&bytes, path).unwrap();
        assert_eq!(records, vec![&b"first"[..], &b""[..], &[7u8; 300][..]]);
        let mut damaged = bytes.clone();
        damaged[13] ^= 1;
        let err = unframe(&damaged, path).unwrap_err().to_string();
        assert!(
            err.contains("record at byte 0: data checksum mismatch"),
            "{err}"
        );
        let err = unframe(&bytes[..bytes.len() - 2], path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated data"), "{err}");
    }
}
