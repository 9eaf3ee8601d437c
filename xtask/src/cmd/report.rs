//! `cargo xtask report merge RUN_DIR... -o DIR`: finished runs made into one (see
//! [`daxtest::report::merge`]); `report kcidb RUN_DIR [-o FILE]`: a run as KCIDB JSON (see
//! [`daxtest::report::kcidb`]); `report html RUN_DIR`: a run's report.html (see
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
            flags::ReportCommand::Kcidb { run, out, origin, log_url_base } => {
                let opts = daxtest::report::kcidb::Options { origin, log_url_base };
                daxtest::report::kcidb::write(&run, out.as_ref(), &opts)
                    .map_err(|e| exit::input(format!("{e:#}")))?;
                if let Some(out) = out {
                    eprintln!("daxtest: KCIDB JSON of {} in {}", run.display(), out.display());
                }
                Ok(exit::SUCCESS)
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
