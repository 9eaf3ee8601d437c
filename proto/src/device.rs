//! The kinds of persistent-memory device a VM can be given (`--device`), and what each one is in
//! the guest: the host builds QEMU's command line from it, the agent checks at boot that the
//! device is what its kind says, and scenarios choose expectations by it (`when = { device }`).

use serde::{Deserialize, Serialize};

/// Kernel command-line key telling the agent which kind of device QEMU was given.
pub const CMDLINE_DEVICE: &str = "daxtest.device";

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// An ACPI NFIT NVDIMM (QEMU `-device nvdimm`) in fsdax mode as `ndctl create-namespace -m
    /// fsdax` makes it by default: struct pages on the device (`-M dev`; the info block's mode is
    /// PFN_MODE_PMEM), 2 MiB alignment.
    #[default]
    Nvdimm,
    /// As [`Device::Nvdimm`], struct pages in RAM (`-M mem`, PFN_MODE_RAM).
    NvdimmMem,
    /// As [`Device::Nvdimm`], 4 KiB namespace alignment (`--align 4K`). The data still starts on
    /// a 2 MiB boundary (drivers/nvdimm/pfn_devs.c nd_pfn_init aligns it to
    /// max(align, memremap_compat_align()), 2 MiB on x86), so PMD faults are still served.
    #[serde(rename = "nvdimm-4k")]
    Nvdimm4k,
    /// QEMU's `virtio-pmem-pci`: the virtio_pmem driver's region is asynchronous (flushes go to
    /// the host), so MAP_SYNC is refused.
    VirtioPmem,
    /// Legacy e820 pmem from the kernel's `memmap=SIZE!OFFSET`: guest RAM that the nd_e820
    /// driver presents as a label-less namespace; gone when the VM stops.
    Memmap,
}

impl Device {
    pub const ALL: [Device; 5] =
        [Device::Nvdimm, Device::NvdimmMem, Device::Nvdimm4k, Device::VirtioPmem, Device::Memmap];

    pub fn name(self) -> &'static str {
        match self {
            Device::Nvdimm => "nvdimm",
            Device::NvdimmMem => "nvdimm-mem",
            Device::Nvdimm4k => "nvdimm-4k",
            Device::VirtioPmem => "virtio-pmem",
            Device::Memmap => "memmap",
        }
    }

    /// What the device is, in words: `NVDIMM in fsdax mode`.
    pub fn describe(self) -> &'static str {
        match self {
            Device::Nvdimm => "NVDIMM in fsdax mode",
            Device::NvdimmMem => "NVDIMM in fsdax mode, struct pages in RAM",
            Device::Nvdimm4k => "NVDIMM in fsdax mode, 4 KiB alignment",
            Device::VirtioPmem => "virtio-pmem device",
            Device::Memmap => "memmap= (e820) pmem range",
        }
    }

    /// The names, for messages: `nvdimm, nvdimm-mem, ...`.
    pub fn names() -> String {
        Device::ALL.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
    }

    /// An ACPI NFIT NVDIMM, made fsdax by ndctl (the others are label-less namespaces used as
    /// the kernel presents them).
    pub fn is_nvdimm(self) -> bool {
        matches!(self, Device::Nvdimm | Device::NvdimmMem | Device::Nvdimm4k)
    }

    /// Whether what the guest wrote survives QEMU being killed (a backing file on the host).
    pub fn persistent(self) -> bool {
        self != Device::Memmap
    }

    /// The nvdimm bus's `provider` in sysfs: nd_desc.provider_name of the driver that registers
    /// it (drivers/acpi/nfit/core.c "ACPI.NFIT", drivers/nvdimm/virtio_pmem.c "virtio-pmem",
    /// drivers/nvdimm/e820.c "e820").
    pub fn provider(self) -> &'static str {
        match self {
            Device::Nvdimm | Device::NvdimmMem | Device::Nvdimm4k => "ACPI.NFIT",
            Device::VirtioPmem => "virtio-pmem",
            Device::Memmap => "e820",
        }
    }

    /// The module that registers the device's nvdimm bus (images/recipe.toml loads each).
    pub fn bus_module(self) -> &'static str {
        match self {
            Device::Nvdimm | Device::NvdimmMem | Device::Nvdimm4k => "nfit",
            Device::VirtioPmem => "virtio_pmem",
            Device::Memmap => "nd_e820",
        }
    }

    /// For an NVDIMM kind: the fsdax namespace's `--map` (`mem`, `dev`) and `--align` in bytes.
    pub fn fsdax_layout(self) -> Option<(&'static str, u64)> {
        match self {
            Device::Nvdimm => Some(("dev", 2 << 20)),
            Device::NvdimmMem => Some(("mem", 2 << 20)),
            Device::Nvdimm4k => Some(("dev", 4 << 10)),
            Device::VirtioPmem | Device::Memmap => None,
        }
    }

    /// Whether MAP_SYNC mappings are possible: the virtio-pmem region is ND_REGION_ASYNC, so its
    /// dax_device is not synchronous (drivers/nvdimm/virtio_pmem.c, drivers/nvdimm/pmem.c) and
    /// daxdev_mapping_supported() refuses VM_SYNC (include/linux/dax.h).
    pub fn synchronous(self) -> bool {
        self != Device::VirtioPmem
    }

    /// The device from `daxtest.device=NAME` on a kernel command line (absent: [`Device::Nvdimm`]).
    pub fn from_cmdline(cmdline: &str) -> Result<Device, String> {
        let key = format!("{CMDLINE_DEVICE}=");
        match cmdline.split_whitespace().find_map(|w| w.strip_prefix(&key)) {
            None => Ok(Device::Nvdimm),
            Some(v) => v.parse(),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Device, String> {
        Device::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown device {s:?}: use one of {}", Device::names()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_name_the_choices() {
        for d in Device::ALL {
            assert_eq!(d.name().parse::<Device>(), Ok(d));
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        }
        let e = "pmem".parse::<Device>().unwrap_err();
        assert_eq!(
            e,
            "unknown device \"pmem\": use one of nvdimm, nvdimm-mem, nvdimm-4k, virtio-pmem, \
             memmap"
        );
    }

    #[test]
    fn the_command_line_names_the_device_or_means_an_nvdimm() {
        assert_eq!(Device::from_cmdline("quiet daxtest.pmem=1"), Ok(Device::Nvdimm));
        assert_eq!(
            Device::from_cmdline("quiet daxtest.device=virtio-pmem x"),
            Ok(Device::VirtioPmem)
        );
        assert!(Device::from_cmdline("daxtest.device=x").is_err());
    }
}
