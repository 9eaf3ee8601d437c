//! What a run does with each case on one kernel: run it (its steps with the expectation that
//! holds for this kernel's version, its seed, its known bug) or skip it, and why.

use crate::scenario::{Case, Xfail, DEVICE, MOUNT_POINT};
use crate::version::KernelVersion;
use daxtest_proto::case::{CaseSpec, MapKind, Op, Outcome, Step};
use daxtest_proto::Device;

/// A case and what it became for the kernel under test.
pub struct PlannedCase {
    pub case: Case,
    /// `Err` when the case cannot be resolved for this kernel (no expectation applies).
    pub resolution: Result<Resolution, String>,
}

/// A case made concrete for one kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Run { spec: Box<CaseSpec>, xfail: Option<Xfail> },
    Skip(String),
}

/// The case for `kernel` and `device`: skipped when a requirement does not hold, or when it cuts
/// the power of a device that keeps nothing across a cut; otherwise each step with the first
/// expectation whose kernel and device conditions hold (none is an error), and the seed.
pub fn resolve(
    case: &Case,
    kernel: KernelVersion,
    device: Device,
    seed: Option<u64>,
) -> Result<Resolution, String> {
    if let Some(c) = case.requires.iter().find(|c| !c.holds(kernel)) {
        return Ok(Resolution::Skip(format!("needs kernel {c}, this is {kernel}")));
    }
    if !case.requires_device.is_empty() && !case.requires_device.contains(&device) {
        let name = |d: &Device| d.name();
        let excluded: Vec<&str> =
            Device::ALL.iter().filter(|d| !case.requires_device.contains(d)).map(name).collect();
        // Said the shorter way: the devices it needs, or the ones it does not run on.
        return Ok(Resolution::Skip(if excluded.len() < case.requires_device.len() {
            format!("needs a device other than {}, this run's is {device}", excluded.join(" and "))
        } else {
            let needed: Vec<&str> = case.requires_device.iter().map(name).collect();
            format!("needs device {}, this run's is {device}", needed.join(" or "))
        }));
    }
    if !device.persistent() && case.steps.iter().any(|s| s.op == Op::PowerCut) {
        return Ok(Resolution::Skip(format!(
            "cuts the power, and the {device} device is guest RAM: nothing of it survives the \
             VM, so there is nothing to recover"
        )));
    }
    let mut steps = Vec::new();
    for s in &case.steps {
        let expect = s
            .expect
            .iter()
            .find(|(when, _)| when.holds(kernel, device))
            .map(|(_, e)| e.clone())
            .ok_or_else(|| {
                format!(
                    "{}:{}: no expectation of this step applies to kernel {kernel} on device \
                     {device}: add one without `when`",
                    case.file.display(),
                    s.line
                )
            })?;
        if let Some(e) = impossible_on(device, &s.op, &expect.outcome) {
            return Err(format!("{}:{}: {e}", case.file.display(), s.line));
        }
        steps.push(Step { line: s.line, op: s.op.clone(), expect });
    }
    let xfail = case
        .xfail
        .iter()
        .find(|x| {
            x.kernel.iter().all(|c| c.holds(kernel))
                && (x.device.is_empty() || x.device.contains(&device))
        })
        .cloned();
    Ok(Resolution::Run {
        spec: Box::new(CaseSpec {
            id: case.id.clone(),
            fs: case.fs,
            mkfs_options: case.mkfs.clone(),
            mount_options: case.mount.clone(),
            device: DEVICE.into(),
            mount_point: MOUNT_POINT.into(),
            seed: seed.unwrap_or(case.seed),
            fsck: case.fsck,
            formatted: false,
            cut_at_end: false,
            after_cut: false,
            records: None,
            saved: Default::default(),
            steps,
        }),
        xfail,
    })
}

/// An expectation of success `device` can never give, whatever the kernel: MAP_SYNC on an
/// asynchronous device (include/linux/dax.h daxdev_mapping_supported: VM_SYNC needs
/// dax_synchronous(); drivers/nvdimm/virtio_pmem.c sets ND_REGION_ASYNC, so drivers/nvdimm/pmem.c
/// leaves the dax_device asynchronous; fs/xfs/xfs_file.c and fs/ext4/file.c return EOPNOTSUPP).
fn impossible_on(device: Device, op: &Op, outcome: &Outcome) -> Option<String> {
    match op {
        Op::Mmap { kind: MapKind::Sync, .. }
            if !device.synchronous() && matches!(outcome, Outcome::Ok) =>
        {
            Some(format!(
                "mmap kind = \"sync\" (MAP_SYNC) cannot succeed on {device}: its dax_device is \
                 asynchronous and the filesystem refuses MAP_SYNC with EOPNOTSUPP; expect that \
                 there ({{ when = {{ device = \"{device}\" }}, errno = \"EOPNOTSUPP\" }}), or keep \
                 the case off it (requires = {{ device = \"!{device}\" }})"
            ))
        }
        _ => None,
    }
}

/// A case cut at its `power_cut` steps into the parts the agent runs, one VM each: every part but
/// the last ends at a cut (`cut_at_end`), every part but the first begins with the `power_cut`
/// step, which recovers what the cut left (`after_cut`). A case without a cut is one part.
pub fn power_cut_parts(spec: &CaseSpec) -> Vec<CaseSpec> {
    let mut parts: Vec<Vec<Step>> = vec![vec![]];
    for step in &spec.steps {
        if step.op == Op::PowerCut {
            parts.push(vec![]);
        }
        parts.last_mut().expect("one part at least").push(step.clone());
    }
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(k, steps)| CaseSpec {
            cut_at_end: k + 1 < n,
            after_cut: k > 0,
            steps,
            ..spec.clone()
        })
        .collect()
}

/// Every case on one kernel, `runs` times: run k > 1 of a case is `ID#k` with a seed derived from
/// its own and k (`seed` fixes every one).
pub fn plan(
    cases: &[Case],
    kernel: KernelVersion,
    device: Device,
    runs: u32,
    seed: Option<u64>,
) -> Vec<PlannedCase> {
    let mut planned = Vec::new();
    for k in 1..=runs {
        for case in cases {
            let mut case = case.clone();
            let seed = seed.or((k > 1).then(|| repeat_seed(case.seed, k)));
            if runs > 1 {
                case.id = format!("{}#{k}", case.id);
            }
            planned.push(PlannedCase { resolution: resolve(&case, kernel, device, seed), case });
        }
    }
    planned
}

/// Run k of a repeated case gets its own seed, derived from the case's and k (SplitMix64).
fn repeat_seed(seed: u64, k: u32) -> u64 {
    let mut z = seed.wrapping_add(u64::from(k).wrapping_mul(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_runs_get_distinct_stable_seeds() {
        let seeds: std::collections::BTreeSet<u64> = (2..100).map(|k| repeat_seed(7, k)).collect();
        assert_eq!(seeds.len(), 98);
        assert_eq!(repeat_seed(7, 5), repeat_seed(7, 5));
    }
}
