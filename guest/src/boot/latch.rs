//! A one-shot latch: an outcome set once that other threads wait for. The boot's threads use it
//! where one of them needs what another makes: a device that must be reconfigured needs ndctl,
//! which is on the payload disk another thread mounts.

/// An outcome that threads can wait for, set once.
#[derive(Default)]
pub struct Latch {
    state: std::sync::Mutex<Option<Result<(), String>>>,
    set: std::sync::Condvar,
}

impl Latch {
    pub fn set(&self, outcome: Result<(), String>) {
        *self.state.lock().expect("latch poisoned") = Some(outcome);
        self.set.notify_all();
    }

    pub fn wait(&self) -> Result<(), String> {
        let mut state = self.state.lock().expect("latch poisoned");
        loop {
            match &*state {
                Some(outcome) => return outcome.clone(),
                None => state = self.set.wait(state).expect("latch poisoned"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_get_the_outcome_set_once() {
        let latch = Latch::default();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| latch.wait());
            latch.set(Err("no payload".into()));
            assert_eq!(waiter.join().unwrap(), Err("no payload".to_string()));
        });
        assert_eq!(latch.wait(), Err("no payload".to_string()));
    }
}
