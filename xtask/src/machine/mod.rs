//! The machine a case runs on: a kernel (Debian's, or a tree or install of one's own) and its
//! config, the guest image, QEMU, the VM's life, the accelerator and the SSH connection. Knows
//! nothing of scenarios' steps or verdicts; uses only the crate's support modules.

pub mod accel;
pub mod apt;
pub mod host;
pub mod image;
pub mod kernel;
pub mod mkfs_image;
pub mod monitor;
pub mod qemu;
pub mod snapshot;
pub mod ssh;
pub mod vm;
