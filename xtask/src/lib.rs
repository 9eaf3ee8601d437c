//! daxtest: Linux DAX filesystem tests in QEMU with emulated NVDIMMs. The library behind
//! `cargo xtask`, whose command line (`flags`, `cmd/`) only parses and dispatches.
//!
//! The folders follow the flow, and each uses only those below it:
//! `scenario` (what a case is) and `machine` (what it runs on) feed `run` (cases planned,
//! run in VMs, judged into results, emitted as events), which `report` consumes and `repro`
//! turns into bug-report bundles; `mutants` builds kernels with deliberate bugs and measures
//! what `run` catches on them. The small modules at the top are support for all of them.

pub mod cleanup;
pub mod concurrent;
pub mod exit;
pub mod lines;
pub mod machine;
pub mod mutants;
pub mod names;
pub mod paths;
pub mod recipe;
pub mod report;
pub mod repro;
pub mod run;
pub mod scenario;
pub mod sh;
pub mod version;
