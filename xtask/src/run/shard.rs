//! `--shard I/N`: which kernel × case pairs of a run are this machine's. Every pair is in exactly
//! one of the N shards, whatever the order of the scenario files; a case's seed does not depend on
//! it (seeds come from case ids). Balanced by count, or with the durations of an earlier run by
//! recorded time.

use crate::report::results::Results;
use std::collections::HashMap;
use std::str::FromStr;

/// Shard `index` (1-based) of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub total: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || {
            format!("--shard {s:?}: write I/N, this machine's share I of N (1 <= I <= N), e.g. 2/4")
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, total) =
            (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        match (index, total) {
            (i, n) if i >= 1 && i <= n => Ok(Shard { index: i, total: n }),
            _ => Err(bad()),
        }
    }
}

/// A kernel × case pair: the kernel's release (`uname -r`, as results.json names it) and the id.
pub type Pair = (String, String);

/// Recorded case durations, by kernel release and id, from an earlier run's results.json (a
/// repeated case's `ID#k` is a run of `ID`); and each id's means over the kernels it ran on,
/// for a pair whose kernel has no record of it. Shards weigh a pair by all its runs, the
/// progress line a case by one run.
#[derive(Debug, Default)]
pub struct Durations {
    /// Each pair's seconds over all its runs, and how many runs.
    exact: HashMap<Pair, (f64, usize)>,
    /// Each id's mean over kernels of a pair's seconds, and its mean over all its runs.
    by_id: HashMap<String, (f64, f64)>,
}

/// `ID#k`, a repeated case's run k, is a run of `ID`.
fn base_id(id: &str) -> &str {
    id.split_once('#').map_or(id, |(id, _)| id)
}

impl Durations {
    pub fn from_results(r: &Results) -> Durations {
        Durations::from_records(
            r.cases.iter().map(|c| (c.kernel.as_str(), c.id.as_str(), c.duration_s)),
        )
    }

    /// From each case run's kernel release, id and seconds.
    pub fn from_records<'a>(records: impl IntoIterator<Item = (&'a str, &'a str, f64)>) -> Self {
        let mut exact: HashMap<Pair, (f64, usize)> = HashMap::new();
        for (kernel, id, d) in records {
            let e = exact.entry((kernel.to_string(), base_id(id).to_string())).or_default();
            e.0 += d;
            e.1 += 1;
        }
        // Per id: the pairs' seconds and their number, the runs' seconds and their number.
        let mut sums: HashMap<String, (f64, usize, usize)> = HashMap::new();
        for ((_, id), (d, runs)) in &exact {
            let e = sums.entry(id.clone()).or_default();
            e.0 += d;
            e.1 += 1;
            e.2 += runs;
        }
        let by_id = sums
            .into_iter()
            .map(|(id, (sum, pairs, runs))| (id, (sum / pairs as f64, sum / runs as f64)))
            .collect();
        Durations { exact, by_id }
    }

    /// The pair's recorded time over all its runs; else the case's on another kernel (their
    /// mean); else `None`.
    fn of(&self, pair: &Pair) -> Option<f64> {
        self.exact.get(pair).map(|e| e.0).or_else(|| self.by_id.get(&pair.1).map(|b| b.0))
    }

    /// The time one run of case `id` took on `kernel` (a mean over its runs); else one run's on
    /// the kernels that ran it; else `None`.
    pub fn per_run(&self, kernel: &str, id: &str) -> Option<f64> {
        let id = base_id(id);
        match self.exact.get(&(kernel.to_string(), id.to_string())) {
            Some((d, runs)) => Some(d / *runs as f64),
            None => self.by_id.get(id).map(|b| b.1),
        }
    }
}

/// The shard (1-based) of each pair, in the order given. Without durations, pairs sorted by
/// kernel and id are dealt round-robin; with them, longest first to the least loaded shard (a
/// pair with no record weighs the mean of those recorded), ties to the lower shard.
pub fn assign(pairs: &[Pair], total: usize, durations: Option<&Durations>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by(|&a, &b| pairs[a].cmp(&pairs[b]));
    let mut shard_of = vec![0; pairs.len()];
    match durations {
        None => {
            for (k, &i) in order.iter().enumerate() {
                shard_of[i] = k % total + 1;
            }
        }
        Some(d) => {
            let recorded: Vec<Option<f64>> = pairs.iter().map(|p| d.of(p)).collect();
            let known: Vec<f64> = recorded.iter().flatten().copied().collect();
            let mean = match known.len() {
                0 => 1.0,
                n => known.iter().sum::<f64>() / n as f64,
            };
            let weight: Vec<f64> = recorded.iter().map(|r| r.unwrap_or(mean)).collect();
            // Stable: equal weights keep the kernel and id order.
            order.sort_by(|&a, &b| weight[b].total_cmp(&weight[a]));
            let mut load = vec![0.0f64; total];
            for &i in &order {
                let (s, _) = load
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)))
                    .expect("at least one shard");
                load[s] += weight[i];
                shard_of[i] = s + 1;
            }
        }
    }
    shard_of
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(kernels: &[&str], ids: &[&str]) -> Vec<Pair> {
        kernels
            .iter()
            .flat_map(|k| ids.iter().map(move |i| (k.to_string(), i.to_string())))
            .collect()
    }

    #[test]
    fn shards_parse_and_refuse_what_is_not_i_of_n() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, total: 4 }));
        assert_eq!("1/1".parse(), Ok(Shard { index: 1, total: 1 }));
        for bad in ["0/2", "3/2", "2", "a/b", "1/0", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("write I/N"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_pair_is_in_exactly_one_shard_whatever_the_order() {
        let p = pairs(&["6.1", "6.12"], &["a/x", "b/y", "c/z", "d/w", "e/v"]);
        for total in 1..=4 {
            let s = assign(&p, total, None);
            assert!(s.iter().all(|&i| (1..=total).contains(&i)));
            let mut counts = vec![0; total];
            s.iter().for_each(|&i| counts[i - 1] += 1);
            // By count: no shard has more than one case more than another.
            assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{counts:?}");
            // The files' order does not matter.
            let mut rev = p.clone();
            rev.reverse();
            let r = assign(&rev, total, None);
            for (k, pair) in p.iter().enumerate() {
                let j = rev.iter().position(|q| q == pair).unwrap();
                assert_eq!(s[k], r[j], "{pair:?}");
            }
        }
    }

    #[test]
    fn recorded_durations_balance_the_time() {
        let p = pairs(&["6.12"], &["long", "a", "b", "c", "d", "new"]);
        let d = Durations::from_records(
            [("long", 8.0), ("a", 2.0), ("b", 2.0), ("c", 2.0), ("d", 2.0)]
                .iter()
                .map(|(id, t)| ("6.12", *id, *t)),
        );
        let s = assign(&p, 2, Some(&d));
        let load = |shard: usize| -> f64 {
            p.iter().zip(&s).filter(|(_, &x)| x == shard).map(|(q, _)| d.of(q).unwrap_or(3.2)).sum()
        };
        // Longest first to the least loaded: long (8) and d against the unknown case (at the
        // mean, 3.2), a, b and c: 10 s against 9.2 s.
        assert_eq!(s, [1, 2, 2, 2, 1, 2]);
        assert!((load(1) - 10.0).abs() < 1e-9 && (load(2) - 9.2).abs() < 1e-9);
        // By count: 3 and 3, 'long' with two others (12 s against 7.2 s).
        let by_count = assign(&p, 2, None);
        assert_eq!(by_count.iter().filter(|&&x| x == 1).count(), 3);
    }

    #[test]
    fn a_case_recorded_on_another_kernel_weighs_that() {
        let d = Durations::from_records([("6.1", "x", 5.0), ("6.12", "x", 3.0)]);
        assert_eq!(d.of(&("6.1".to_string(), "x".to_string())), Some(5.0));
        assert_eq!(d.of(&("7.2".to_string(), "x".to_string())), Some(4.0));
        assert_eq!(d.of(&("7.2".to_string(), "y".to_string())), None);
    }
}
