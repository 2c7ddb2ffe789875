//! The runtime state machine:
//! `pending → creating → running ⇄ paused → terminating → terminated | error`.
//! Illegal transitions are refused with `CONFLICT`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a runtime is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Pending,
    Creating,
    Running,
    Paused,
    Terminating,
    Terminated,
    Error,
}

impl SandboxState {
    pub const ALL: [SandboxState; 7] = [
        SandboxState::Pending,
        SandboxState::Creating,
        SandboxState::Running,
        SandboxState::Paused,
        SandboxState::Terminating,
        SandboxState::Terminated,
        SandboxState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Pending => "pending",
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Terminating => "terminating",
            SandboxState::Terminated => "terminated",
            SandboxState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Result<SandboxState> {
        SandboxState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown runtime state {s:?}")))
    }

    /// Terminated and error are final: nothing leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(self, SandboxState::Terminated | SandboxState::Error)
    }

    /// Whether the runtime can take exec and file calls.
    pub fn is_live(self) -> bool {
        matches!(self, SandboxState::Running)
    }

    /// Whether `self → to` is a legal transition.
    pub fn can_transition_to(self, to: SandboxState) -> bool {
        use SandboxState::*;
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
    pub fn transition(self, to: SandboxState) -> Result<SandboxState> {
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

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SandboxState::*;
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
        for s in SandboxState::ALL {
            assert_eq!(s.can_transition_to(Error), !s.is_terminal());
        }
    }

    #[test]
    fn parse_round_trips() {
        for s in SandboxState::ALL {
            assert_eq!(SandboxState::parse(s.as_str()).unwrap(), s);
        }
        assert!(SandboxState::parse("zombie").is_err());
    }
}
