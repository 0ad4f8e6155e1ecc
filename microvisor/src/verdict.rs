//! The system's verdict when no component can run any more.
//!
//! The core halts with "success" only when nothing went wrong: no
//! component exited with an error, faulted without a supervisor to handle
//! it, or was refused at load, and every VM that was created was entered
//! at least once (a VM declared but never run — say its switcher runs the
//! wrong program — means the system did not do what it says). Components
//! still waiting, or stopped by their supervisor, do not make it a failure.

/// What the components and VMs came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Exited with code 0.
    pub exited: usize,
    /// Exited with another code.
    pub failed: usize,
    /// Faulted with no supervisor.
    pub faulted: usize,
    /// Stopped by a supervisor, or faulted under one.
    pub stopped: usize,
    /// Waiting forever, or never started.
    pub blocked: usize,
    /// Refused at load.
    pub refused: usize,
    /// VMs created but never entered.
    pub vms_never_run: usize,
}

/// How the system ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// A failure, with the reason the halt line gives.
    Failure(&'static str),
}

impl Tally {
    /// The verdict this tally deserves.
    pub fn verdict(&self) -> Verdict {
        let components = self.failed + self.faulted + self.refused;
        match (components, self.vms_never_run) {
            (0, 0) => Verdict::Success,
            (0, _) => Verdict::Failure("a VM never ran"),
            _ => Verdict::Failure("a component failed, faulted or was refused"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clean_end_is_a_success() {
        let clean = Tally {
            exited: 3,
            stopped: 1,
            blocked: 2,
            ..Tally::default()
        };
        assert_eq!(clean.verdict(), Verdict::Success);
        for bad in [
            Tally { failed: 1, ..clean },
            Tally {
                faulted: 1,
                ..clean
            },
            Tally {
                refused: 1,
                ..clean
            },
        ] {
            assert_eq!(
                bad.verdict(),
                Verdict::Failure("a component failed, faulted or was refused")
            );
        }
    }

    #[test]
    fn a_vm_that_never_ran_fails_the_system() {
        let tally = Tally {
            exited: 1,
            vms_never_run: 1,
            ..Tally::default()
        };
        assert_eq!(tally.verdict(), Verdict::Failure("a VM never ran"));
        let both = Tally {
            refused: 1,
            ..tally
        };
        assert_eq!(
            both.verdict(),
            Verdict::Failure("a component failed, faulted or was refused")
        );
    }
}
