//! The checksum a Hub ETag promises: an LFS file's ETag is the SHA-256 of its bytes (64 hex
//! digits), a git file's is its git blob id, `sha1("blob <len>\0" + bytes)` (40 hex digits).

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Hashes a file's bytes as they arrive, for the checksum its ETag names.
pub enum EtagHasher {
    /// A 64-hex ETag: SHA-256 of the bytes.
    Sha256(Sha256),
    /// A 40-hex ETag: the git blob id.
    GitBlob(Sha1),
    /// Another ETag form (the size is still checked).
    Unknown,
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl EtagHasher {
    /// The hasher for `etag` of a file of `size` bytes.
    pub fn for_etag(etag: &str, size: u64) -> Self {
        if is_hex(etag, 64) {
            Self::Sha256(Sha256::new())
        } else if is_hex(etag, 40) {
            let mut git = Sha1::new();
            git.update(format!("blob {size}\0").as_bytes());
            Self::GitBlob(git)
        } else {
            Self::Unknown
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::GitBlob(h) => h.update(bytes),
            Self::Unknown => {}
        }
    }

    /// The name of the checksum, and its value as lowercase hex; `None` for an unknown form.
    pub fn finish(self) -> Option<(&'static str, String)> {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            Self::Sha256(h) => Some(("sha256", hex(&h.finalize()))),
            Self::GitBlob(h) => Some(("git blob id", hex(&h.finalize()))),
            Self::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // `printf 'hello\n' | sha256sum` and `printf 'hello\n' | git hash-object --stdin`.
        let mut h = EtagHasher::for_etag(&"0".repeat(64), 6);
        h.update(b"hello\n");
        assert_eq!(
            h.finish().unwrap().1,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let mut h = EtagHasher::for_etag(&"0".repeat(40), 6);
        h.update(b"hello\n");
        assert_eq!(
            h.finish().unwrap().1,
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert!(EtagHasher::for_etag("xyz", 1).finish().is_none());
    }
}
