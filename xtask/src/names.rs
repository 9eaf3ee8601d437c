//! File and directory names made from case ids and kernel releases: every character that is not
//! ASCII alphanumeric or in the caller's `keep` set becomes `_`.

pub fn safe(s: &str, keep: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || keep.contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_kept_characters_survive() {
        assert_eq!(super::safe("reflink/a b/xfs/dax=always", "-"), "reflink_a_b_xfs_dax_always");
        assert_eq!(super::safe("6.12.117+deb12-amd64", "-_.+"), "6.12.117+deb12-amd64");
        assert_eq!(super::safe("../x", "-"), "___x");
    }
}
