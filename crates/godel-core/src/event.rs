//! Events: every state change and policy decision becomes one. Providers
//! report what they see (OOM, a process died) through an `EventSink`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic sequence number assigned by the store (0 before it is stored).
    #[serde(default)]
    pub seq: i64,
    pub time: DateTime<Utc>,
    /// e.g. `state_changed`, `oom`, `died`, `spawn_fallback`, `circuit_opened`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(kind: impl Into<String>) -> Self {
        Event {
            seq: 0,
            time: Utc::now(),
            kind: kind.into(),
            runtime_id: None,
            team: None,
            data: serde_json::Value::Null,
        }
    }
    pub fn runtime(mut self, id: impl Into<String>) -> Self {
        self.runtime_id = Some(id.into());
        self
    }
    pub fn team(mut self, team: impl Into<String>) -> Self {
        self.team = Some(team.into());
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

/// Where providers send events. Cheap to clone.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops every event.
pub fn null_sink() -> EventSink {
    Arc::new(|_| {})
}
