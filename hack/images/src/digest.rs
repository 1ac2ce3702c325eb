//! Content digests, `sha256:<hex>`: how an OCI layout names and checks its
//! blobs, and how the manifest digest identifies a whole image.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// The sha256 digest of some bytes, displayed as `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The only algorithm we write; every OCI tool reads it.
    pub const ALGORITHM: &str = "sha256";

    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self { hex: hex::encode(Sha256::digest(bytes)) }
    }

    /// The lowercase hex part, which is also the blob's file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Self::ALGORITHM, self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_algorithm_and_hex() {
        // sha256 of the empty string, as every OCI tool knows it.
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::of(b"").to_string(), format!("sha256:{empty}"));
        assert_eq!(Digest::of(b"").hex(), empty);
    }
}
