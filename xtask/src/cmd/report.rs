//! `cargo xtask report merge RUN_DIR... -o DIR`: finished runs made into one (see
//! [`daxtest::report::merge`]); `cargo xtask report html RUN_DIR`: a run's report.html (see
//! [`daxtest::report::html`]).

use super::Ctx;
use crate::flags;
use daxtest::exit;

impl flags::Report {
    pub fn run(self, _ctx: &Ctx) -> anyhow::Result<i32> {
        match self.what {
            flags::ReportCommand::Merge { runs, out } => {
                let merged =
                    daxtest::report::merge::merge(&runs, &out, Box::new(std::io::stderr()))
                        .map_err(|e| exit::input(format!("{e:#}")))?;
                eprintln!("daxtest: merged {} runs into {}", runs.len(), out.display());
                // As `test` would have exited on these cases.
                let failed = merged.cases.iter().any(|c| c.status.is_failure());
                Ok(if failed { exit::CASES_FAILED } else { exit::SUCCESS })
            }
            flags::ReportCommand::Html { run } => {
                let path = daxtest::report::html::write_dir(&run)
                    .map_err(|e| exit::input(format!("{e:#}")))?;
                eprintln!("daxtest: wrote {}", path.display());
                Ok(exit::SUCCESS)
            }
        }
    }
}
