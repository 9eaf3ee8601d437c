//! Exit statuses of `cargo xtask`, in one place.
//!
//! `test`, `check`, `list`, `image`, `bench`: 0 all passed (xfail allowed), 1 a case failed,
//! crashed, hung or errored, 2 usage or input error (nothing booted), 3 infrastructure failure
//! (QEMU, image, SSH). `run` and `shell` exit with the guest command's status, and 255 when
//! daxtest itself failed, as ssh does.
//! `kernel --src`: 0 built, 2 not a kernel source tree or Kconfig dropped an option of
//! images/kernel.config (nothing built), 3 the build or a package installation failed.

pub const SUCCESS: i32 = 0;
pub const CASES_FAILED: i32 = 1;
pub const INPUT: i32 = 2;
pub const INFRASTRUCTURE: i32 = 3;
pub const RUN_FAILED: i32 = 255;

/// An error in what the user gave (a scenario, a flag): exit status 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

pub fn input(message: impl Into<String>) -> anyhow::Error {
    InputError(message.into()).into()
}

/// The exit status for an error that ended `verb`.
pub fn for_error(e: &anyhow::Error, passes_through_status: bool) -> i32 {
    if e.downcast_ref::<InputError>().is_some() || e.downcast_ref::<clap::Error>().is_some() {
        INPUT
    } else if passes_through_status {
        RUN_FAILED
    } else {
        INFRASTRUCTURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_are_2_and_the_rest_3_or_255() {
        assert_eq!(for_error(&input("bad scenario"), false), INPUT);
        assert_eq!(for_error(&input("bad flag").context("while parsing"), true), INPUT);
        assert_eq!(for_error(&anyhow::anyhow!("QEMU died"), false), INFRASTRUCTURE);
        assert_eq!(for_error(&anyhow::anyhow!("QEMU died"), true), RUN_FAILED);
    }
}
