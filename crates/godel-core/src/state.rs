//! The runtime state machine:
//! `pending → creating → running ⇄ paused → terminating → terminated | error`.
//! Illegal transitions are refused with `CONFLICT`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a runtime is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeState {
    Pending,
    Creating,
    Running,
    Paused,
    Terminating,
    Terminated,
    Error,
}

impl RuntimeState {
    pub const ALL: [RuntimeState; 7] = [
        RuntimeState::Pending,
        RuntimeState::Creating,
        RuntimeState::Running,
        RuntimeState::Paused,
        RuntimeState::Terminating,
        RuntimeState::Terminated,
        RuntimeState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeState::Pending => "pending",
            RuntimeState::Creating => "creating",
            RuntimeState::Running => "running",
            RuntimeState::Paused => "paused",
            RuntimeState::Terminating => "terminating",
            RuntimeState::Terminated => "terminated",
            RuntimeState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Result<RuntimeState> {
        RuntimeState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown runtime state {s:?}")))
    }

    /// Terminated and error are final: nothing leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(self, RuntimeState::Terminated | RuntimeState::Error)
    }

    /// Whether the runtime can take exec and file calls.
    pub fn is_live(self) -> bool {
        matches!(self, RuntimeState::Running)
    }

    /// Whether `self → to` is a legal transition.
    pub fn can_transition_to(self, to: RuntimeState) -> bool {
        use RuntimeState::*;
        match (self, to) {
            (Pending, Creating) => true,
            (Creating, Running) => true,
            (Running, Paused) | (Paused, Running) => true,
            (Pending | Creating | Running | Paused, Terminating) => true,
            (Terminating, Terminated) => true,
            // Any non-final state may fail.
            (s, Error) => !s.is_terminal(),
            _ => false,
        }
    }

    /// Check a transition, returning the new state or a `CONFLICT` error.
    pub fn transition(self, to: RuntimeState) -> Result<RuntimeState> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(Error::conflict(format!(
                "illegal state transition {} → {}",
                self.as_str(),
                to.as_str()
            )))
        }
    }
}

impl std::fmt::Display for RuntimeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RuntimeState::*;
    use super::*;

    #[test]
    fn happy_path_is_legal() {
        let mut s = Pending;
        for next in [Creating, Running, Paused, Running, Terminating, Terminated] {
            s = s.transition(next).unwrap();
        }
        assert_eq!(s, Terminated);
    }

    #[test]
    fn illegal_transitions_are_refused() {
        for (from, to) in [
            (Terminated, Running),
            (Error, Running),
            (Terminated, Error),
            (Pending, Running),
            (Running, Creating),
            (Paused, Terminated),
            (Creating, Paused),
        ] {
            let e = from.transition(to).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::Conflict, "{from} → {to}");
        }
    }

    #[test]
    fn every_live_state_can_fail() {
        for s in RuntimeState::ALL {
            assert_eq!(s.can_transition_to(Error), !s.is_terminal());
        }
    }

    #[test]
    fn parse_round_trips() {
        for s in RuntimeState::ALL {
            assert_eq!(RuntimeState::parse(s.as_str()).unwrap(), s);
        }
        assert!(RuntimeState::parse("zombie").is_err());
    }
}
