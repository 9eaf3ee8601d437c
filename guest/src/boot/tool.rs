//! Running the guest's tools (ip, ndctl) during the boot.

use anyhow::{bail, Context};
use std::process::{Command, Stdio};

/// Runs a guest tool and returns its stdout; the error carries its stderr.
pub fn tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
