//! A run: cases planned for a kernel, run in VMs, judged into results, and the events that
//! carry them to the reporters. Uses the machine and the scenario model; reporters only consume
//! its events.

pub mod events;
pub mod kernel_log;
pub mod plan;
pub mod runner;
pub mod shard;
pub mod verdict;
mod watch;
