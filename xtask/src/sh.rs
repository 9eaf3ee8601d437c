//! Words for a POSIX shell: the QEMU command lines of logs and qemu.sh, and the generated
//! reproducers, quote alike.

/// `s` as one sh word: as it is when it is plainly safe, else single-quoted.
pub fn quote(s: &str) -> String {
    if is_plain(s) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether `s` needs no quoting: not empty, and nothing any shell or xfs_io would split on or
/// expand.
pub fn is_plain(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_=,.:/+@%".contains(c))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn safe_words_stay_and_the_rest_is_single_quoted() {
        assert_eq!(quote("-machine"), "-machine");
        assert_eq!(quote("pc,nvdimm=on"), "pc,nvdimm=on");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
