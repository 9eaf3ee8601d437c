//! Kernel versions (upstream numbering) and the conditions scenarios and kernel.config write on
//! them: `>=6.2`, `<6.2`, `6.1`, `=6.1.192`.

use std::fmt;

/// A kernel version, upstream numbering (Debian's 6.1.0-55 package is 6.1.192).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// "6.12.117", "6.12.117-1~deb12u1", "6.1.0-55-amd64", "6.2".
    pub fn parse(s: &str) -> Option<KernelVersion> {
        let core: String = s.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let mut parts = core.split('.').filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(KernelVersion(major, minor, patch))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// `>=6.2`, `<6.2`, `6.1` (any 6.1.x), `=6.1.192`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    op: &'static str,
    version: KernelVersion,
    /// How many components were written: `6.1` matches every 6.1.x.
    depth: usize,
    text: String,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Constraint, String> {
        let t = s.trim();
        let (op, rest) = [">=", "<=", ">", "<", "="]
            .iter()
            .find_map(|op| t.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("=", t));
        let rest = rest.trim();
        let depth = rest.split('.').count();
        let version = KernelVersion::parse(rest)
            .filter(|_| rest.chars().all(|c| c.is_ascii_digit() || c == '.') && depth <= 3)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a kernel version condition: write >=6.2, <6.2, 6.1 or =6.1.192"
                )
            })?;
        Ok(Constraint { op, version, depth, text: t.to_string() })
    }

    pub fn holds(&self, v: KernelVersion) -> bool {
        let trunc = |k: KernelVersion| match self.depth {
            1 => KernelVersion(k.0, 0, 0),
            2 => KernelVersion(k.0, k.1, 0),
            _ => k,
        };
        let v = trunc(v);
        match self.op {
            ">=" => v >= self.version,
            "<=" => v <= self.version,
            ">" => v > self.version,
            "<" => v < self.version,
            _ => v == self.version,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_constraints() {
        assert_eq!(KernelVersion::parse("6.12.117-1~deb12u1"), Some(KernelVersion(6, 12, 117)));
        assert_eq!(KernelVersion::parse("6.1.0-55-amd64"), Some(KernelVersion(6, 1, 0)));
        assert_eq!(KernelVersion::parse("6.2"), Some(KernelVersion(6, 2, 0)));
        let v61 = KernelVersion(6, 1, 192);
        let v612 = KernelVersion(6, 12, 117);
        assert!(Constraint::parse("<6.2").unwrap().holds(v61));
        assert!(!Constraint::parse("<6.2").unwrap().holds(v612));
        assert!(Constraint::parse(">=6.2").unwrap().holds(v612));
        assert!(Constraint::parse("6.1").unwrap().holds(v61));
        assert!(!Constraint::parse("6.1").unwrap().holds(v612));
        assert!(Constraint::parse("=6.1.192").unwrap().holds(v61));
        assert!(Constraint::parse("6").unwrap().holds(v612));
        assert!(Constraint::parse("> six").unwrap_err().contains("not a kernel version condition"));
    }
}
