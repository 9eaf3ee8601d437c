//! Types shared by the host (xtask) and the guest agent, so both sides agree on every byte.
//!
//! The host writes a [`BootConfig`] into the initramfs; the agent, running as PID 1, follows it and
//! records a [`ReadyReport`] that the host reads over SSH with `daxtest-agent probe`.

use serde::{Deserialize, Serialize};

pub mod case;
pub mod device;
pub mod errno;

pub use device::{Device, CMDLINE_DEVICE};

/// Where the agent binary lives in the guest.
pub const AGENT_PATH: &str = "/usr/bin/daxtest-agent";
/// Where the host puts the boot configuration in the initramfs.
pub const BOOT_CONFIG_PATH: &str = "/etc/daxtest/boot.json";
/// A one-file erofs made on the host when the image is built (mkfs.erofs of one plain 4 KiB
/// file), which the boot's DAX proof writes to the start of each NVDIMM and mounts.
pub const DAX_PROOF_IMAGE_PATH: &str = "/etc/daxtest/dax-proof.erofs";
/// Where the agent records the outcome of the boot.
pub const READY_PATH: &str = "/run/daxtest/ready.json";
/// Where the agent records when the background module loads ([`BootConfig::preload`]) ended.
pub const PRELOADED_PATH: &str = "/run/daxtest/preloaded.json";
/// The port sshd listens on in the guest (QEMU forwards a free host port to it).
pub const GUEST_SSH_PORT: u16 = 22;
/// The agent's lines on the serial console during boot, which the host reads before SSH answers
/// and the HTML report reads from kept serial logs; the first three end with the uptime ("2.31s").
pub mod console {
    pub const INIT: &str = "daxtest-agent: init at ";
    pub const SSHD_STARTED: &str = "daxtest-agent: sshd started at ";
    pub const READY: &str = "daxtest-agent: ready at ";
    /// Followed by the ready report as one line of JSON, just before [`READY`]: the host reads
    /// it there instead of asking `daxtest-agent probe` over SSH (a program started under
    /// TCG), and asks only when the line is not whole (a kernel message written into it).
    pub const REPORT: &str = "daxtest-agent: report ";
    /// Followed by why.
    pub const NOT_READY: &str = "daxtest-agent: NOT READY: ";
}

/// Kernel command-line key telling the agent how many NVDIMMs QEMU was given.
pub const CMDLINE_PMEM_COUNT: &str = "daxtest.pmem";

/// What the agent does at boot, written by the host when it builds the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// Kernel release the modules belong to (`uname -r` in the guest).
    pub kernel_release: String,
    /// Ordered module chains, as `modprobe --show-depends` lists them for each wanted module.
    /// Chains load in parallel; a module shared by two chains is loaded once.
    pub module_chains: Vec<ModuleChain>,
    /// The read-only disk with the tools and modules the boot does not need.
    pub payload: Payload,
    /// The sshd command line (dropbear), started once the network is up.
    pub sshd: Vec<String>,
    /// Modules loaded in the background once the guest is ready (with the payload's modprobe),
    /// so that the first case that needs one (xfs: about 1 s under TCG) does not wait for it.
    #[serde(default)]
    pub preload: Vec<String>,
    /// Guest address on QEMU's user network.
    pub address: String,
    /// Default gateway on QEMU's user network.
    pub gateway: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Block device, `/dev/vda`.
    pub device: String,
    pub mount_point: String,
    pub fstype: String,
    /// Module chains (by target) to wait for before mounting it.
    pub needs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleChain {
    /// The module asked for in the recipe (the last one of `paths`).
    pub target: String,
    /// Guest paths of the `.ko` files, dependencies first.
    pub paths: Vec<String>,
    /// Soft dependencies may fail to load (crc32c-intel without SSE4.2) without failing the boot.
    pub optional: Vec<String>,
}

/// The outcome of the boot, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyReport {
    pub agent_version: String,
    pub kernel_release: String,
    /// `true` when every required module loaded and every NVDIMM is a working fsdax device.
    pub ok: bool,
    /// Why the guest is not usable, when `ok` is false.
    pub errors: Vec<String>,
    /// Boot phases with the guest uptime (seconds) at which each one ended.
    pub timeline: Vec<Phase>,
    pub modules: Vec<ModuleLoad>,
    pub devices: Vec<PmemDevice>,
}

/// How the background module loads ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preloaded {
    /// Guest uptime when they ended.
    pub uptime_s: f64,
    /// modprobe's complaint, when it failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub uptime_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleLoad {
    pub path: String,
    /// `None` when it loaded (or was already there); the error otherwise.
    pub error: Option<String>,
    pub millis: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PmemDevice {
    /// Block device name, `pmem0`.
    pub name: String,
    pub size_bytes: u64,
    /// `true` when the agent had to run `ndctl create-namespace -m fsdax` at this boot.
    pub formatted_now: bool,
    /// The proof that a filesystem on this device really gets DAX.
    pub dax_proof: DaxProof,
    /// What the device is, as sysfs tells (checked against the kind QEMU was given).
    #[serde(default)]
    pub layout: DeviceLayout,
}

/// A pmem device as sysfs describes it: the bus's provider and the namespace's mode, map and
/// alignment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceLayout {
    /// `/sys/bus/nd/devices/ndbusN/provider`: `ACPI.NFIT`, `virtio-pmem`, `e820`.
    pub provider: String,
    /// `fsdax` (a pfn device claims the namespace) or `raw`.
    pub mode: String,
    /// Where the struct pages are: `mem` or `dev` for fsdax (the pfn device's `mode`, `ram` or
    /// `pmem`); `mem` for a raw namespace whose region maps pages (ND_REGION_PAGEMAP).
    pub map: String,
    /// The pfn device's `align` in bytes (0 for a raw namespace).
    pub align: u64,
    /// The region's sysfs path, for messages.
    pub region: String,
}

/// Proof that DAX works on a device: a filesystem mounted with dax=always and a file on it whose
/// statx reports STATX_ATTR_DAX. On a raw namespace XFS mounts without DAX ("Turning off DAX")
/// and ext4 refuses dax=always.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaxProof {
    /// The filesystem used for the proof.
    pub filesystem: String,
    /// `/sys/block/<dev>/queue/dax`: the block layer's own view.
    pub queue_dax: bool,
    /// The options of the test mount, as /proc/mounts shows them.
    pub mount_options: String,
    /// STATX_ATTR_DAX on a file created on that mount.
    pub statx_dax: bool,
    pub ok: bool,
    pub detail: String,
}

impl ReadyReport {
    /// One line per problem, for error messages on the host.
    pub fn summary(&self) -> String {
        if self.errors.is_empty() {
            "ok".to_string()
        } else {
            self.errors.join("; ")
        }
    }

    /// Guest uptime at the end of the named phase.
    pub fn phase(&self, name: &str) -> Option<f64> {
        self.timeline.iter().find(|p| p.name == name).map(|p| p.uptime_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_config_rejects_unknown_fields() {
        let json = r#"{"kernel_release":"x","module_chains":[],"sshd":[],"address":"a",
                       "payload":{"device":"d","mount_point":"m","fstype":"f","needs":[]},
                       "gateway":"g","extra":1}"#;
        let err = serde_json::from_str::<BootConfig>(json).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn ready_report_summary_and_phase() {
        let r = ReadyReport {
            agent_version: "0".into(),
            kernel_release: "k".into(),
            ok: false,
            errors: vec!["a".into(), "b".into()],
            timeline: vec![Phase { name: "modules".into(), uptime_s: 1.5 }],
            modules: vec![],
            devices: vec![],
        };
        assert_eq!(r.summary(), "a; b");
        assert_eq!(r.phase("modules"), Some(1.5));
        assert_eq!(r.phase("nope"), None);
    }
}
