//! File and directory names made from case ids and kernel releases (every character that is not
//! ASCII alphanumeric or in the caller's `keep` set becomes `_`), or from a hash of some bytes.

use sha2::{Digest, Sha256};

pub fn safe(s: &str, keep: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || keep.contains(c) { c } else { '_' }).collect()
}

/// The first 12 hex digits of the bytes' SHA-256: a short name for a file's content, a path or a
/// line of configuration.
pub fn hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_kept_characters_survive() {
        assert_eq!(super::safe("reflink/a b/xfs/dax=always", "-"), "reflink_a_b_xfs_dax_always");
        assert_eq!(super::safe("6.12.117+deb12-amd64", "-_.+"), "6.12.117+deb12-amd64");
        assert_eq!(super::safe("../x", "-"), "___x");
    }

    #[test]
    fn hashes_are_12_hex_digits() {
        assert_eq!(super::hash(b""), "e3b0c44298fc");
    }
}
