//! Byte offsets in a text to 1-based line and column, for `file:line:column` diagnostics. The
//! line starts are found once per text and each lookup is a binary search: scanning from the
//! start of the file for every step made `check` quadratic in the size of a scenario file.

/// Where each line of a text begins.
pub struct LineIndex {
    /// Byte offset of the first byte of each line; the first is 0.
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts, len: text.len() }
    }

    /// 1-based line and column (in bytes) of `offset`; an offset past the end is the end.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.len);
        // The number of lines that start at or before the offset is its line number.
        let line = self.starts.partition_point(|&start| start <= offset);
        (line, offset - self.starts[line - 1] + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let index = LineIndex::new("ab\ncd");
        assert_eq!(index.line_col(0), (1, 1));
        assert_eq!(index.line_col(4), (2, 2));
    }

    /// Every offset of texts with empty lines, a trailing newline, none, and multi-byte
    /// characters (columns count bytes) agrees with a scan from the start.
    #[test]
    fn agrees_with_a_scan_at_every_offset() {
        let scan = |text: &str, offset: usize| {
            let before = &text.as_bytes()[..offset.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            (line, before.len() - start + 1)
        };
        for text in ["", "\n", "a", "a\n", "\n\nab\n\ncd", "é\nñx\n", "x\ny\nz"] {
            let index = LineIndex::new(text);
            for offset in 0..=text.len() + 2 {
                assert_eq!(index.line_col(offset), scan(text, offset), "{text:?} at {offset}");
            }
        }
    }
}
