//! Loads kernel module chains in parallel with finit_module(2). Under TCG every insmod costs
//! tens of milliseconds, and most chains are independent (NVDIMM, XFS, ext4, network), so they
//! run on their own threads; a module shared by two chains is loaded once and the other waits.

use daxtest_proto::{ModuleChain, ModuleLoad};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

#[derive(Default)]
pub struct Loader {
    /// `None` while a thread loads the module, then its outcome.
    state: Mutex<HashMap<String, Option<Result<(), String>>>>,
    done: Condvar,
    log: Mutex<Vec<ModuleLoad>>,
    /// Finished chains by target, with their error.
    chains: Mutex<HashMap<String, Result<(), String>>>,
    chain_done: Condvar,
}

impl Loader {
    /// Loads one chain (call it on a thread per chain) and records its outcome.
    pub fn run_chain(&self, chain: &ModuleChain) {
        let outcome = self.chain(chain);
        self.chains.lock().expect("chain state poisoned").insert(chain.target.clone(), outcome);
        self.chain_done.notify_all();
    }

    /// Blocks until the chains of `targets` that exist in `all` have finished; their errors.
    pub fn wait_for(&self, targets: &[&str], all: &[ModuleChain]) -> Vec<String> {
        let wanted: Vec<&str> =
            targets.iter().copied().filter(|t| all.iter().any(|c| c.target == *t)).collect();
        let mut chains = self.chains.lock().expect("chain state poisoned");
        while !wanted.iter().all(|t| chains.contains_key(*t)) {
            chains = self.chain_done.wait(chains).expect("chain state poisoned");
        }
        wanted.iter().filter_map(|t| chains[*t].clone().err()).collect()
    }

    /// Errors of every finished chain.
    pub fn errors(&self) -> Vec<String> {
        let chains = self.chains.lock().expect("chain state poisoned");
        let mut errors: Vec<String> = chains.values().filter_map(|r| r.clone().err()).collect();
        errors.sort();
        errors
    }

    pub fn into_log(self) -> Vec<ModuleLoad> {
        self.log.into_inner().expect("module log poisoned")
    }

    fn chain(&self, chain: &ModuleChain) -> Result<(), String> {
        for path in &chain.paths {
            if let Err(e) = self.load(path) {
                if !chain.optional.contains(path) {
                    return Err(format!("module {} (needed by {}): {e}", path, chain.target));
                }
            }
        }
        Ok(())
    }

    fn load(&self, path: &str) -> Result<(), String> {
        let mut state = self.state.lock().expect("module state poisoned");
        loop {
            match state.get(path) {
                Some(Some(outcome)) => return outcome.clone(),
                Some(None) => state = self.done.wait(state).expect("module state poisoned"),
                None => break,
            }
        }
        state.insert(path.to_string(), None);
        drop(state);

        let start = Instant::now();
        let outcome = insmod(path);
        self.log.lock().expect("module log poisoned").push(ModuleLoad {
            path: path.to_string(),
            error: outcome.as_ref().err().cloned(),
            millis: start.elapsed().as_millis() as u64,
        });
        let mut state = self.state.lock().expect("module state poisoned");
        state.insert(path.to_string(), Some(outcome.clone()));
        self.done.notify_all();
        outcome
    }
}

fn insmod(path: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("open: {e}"))?;
    match rustix::system::finit_module(&file, c"", 0) {
        // Already loaded or built in: what we wanted.
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(format!("finit_module: {e}")),
    }
}
