//! The E2B control-plane REST shapes (`shared/e2b-spec/openapi.yml`) that the
//! official SDKs send and require, plus the small shared constants.
//!
//! Request bodies deliberately accept unknown fields (no
//! `deny_unknown_fields`, unlike godel's own API): the SDKs add optional keys
//! release by release (`autoResume`, `mcp`, `iam`, `volumeMounts` …) and a
//! compatible server must not reject them. Field names follow the E2B spec
//! exactly (`sandboxID`, `templateID`, `allow_internet_access`).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The envd port; `49983-{id}.{domain}` is a sandbox's envd host.
pub const ENVD_PORT: u16 = 49983;
/// The envd version advertised by the godel server (≥ 0.6.4 unlocks every SDK feature).
pub const ENVD_VERSION: &str = "0.6.7";
/// The template the SDKs default to.
pub const DEFAULT_TEMPLATE: &str = "base";
/// Header routing envd calls to a sandbox behind one URL.
pub const SANDBOX_ID_HEADER: &str = "e2b-sandbox-id";
/// Header naming the sandbox port behind one URL.
pub const SANDBOX_PORT_HEADER: &str = "e2b-sandbox-port";
/// Header carrying the envd access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";
/// Header carrying the API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header counting godel E2B servers a create passed through (loop guard).
pub const HOPS_HEADER: &str = "x-godel-e2b-hops";
/// A create that passed through more godel servers than this is refused (508).
pub const MAX_HOPS: u32 = 4;

/// `POST /sandboxes` and `POST /v2/sandboxes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Time to live in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, rename = "autoPause", skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "envVars", skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// The create / connect response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Deprecated by E2B but still required by the Python SDK.
    #[serde(rename = "clientID", default)]
    pub client_id: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(
        rename = "envdAccessToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub envd_access_token: Option<String>,
    #[serde(rename = "trafficAccessToken", default)]
    pub traffic_access_token: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
}

/// `running` or `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum E2bState {
    Running,
    Paused,
}

impl E2bState {
    pub fn as_str(self) -> &'static str {
        match self {
            E2bState::Running => "running",
            E2bState::Paused => "paused",
        }
    }
}

/// What happens when a sandbox's time runs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(rename = "autoResume", default)]
    pub auto_resume: bool,
    /// `kill` or `pause`.
    #[serde(rename = "onTimeout", default)]
    pub on_timeout: String,
}

/// One entry of `GET /v2/sandboxes`, and (with the optional fields) `GET /sandboxes/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID", default)]
    pub client_id: String,
    #[serde(rename = "startedAt", with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(rename = "endAt", with = "rfc3339")]
    pub end_at: DateTime<Utc>,
    #[serde(rename = "cpuCount")]
    pub cpu_count: i64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub state: E2bState,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(
        rename = "envdAccessToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub envd_access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutRequest {
    pub timeout: i64,
}

/// `POST /sandboxes/{id}/refreshes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
}

/// `POST /sandboxes/{id}/connect` and `/resume`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// One point of `GET /sandboxes/{id}/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMetric {
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    #[serde(rename = "timestampUnix")]
    pub timestamp_unix: i64,
    #[serde(rename = "cpuCount")]
    pub cpu_count: i64,
    #[serde(rename = "cpuUsedPct")]
    pub cpu_used_pct: f64,
    #[serde(rename = "memUsed")]
    pub mem_used: i64,
    #[serde(rename = "memTotal")]
    pub mem_total: i64,
    #[serde(rename = "memCache", default)]
    pub mem_cache: i64,
    #[serde(rename = "diskUsed")]
    pub disk_used: i64,
    #[serde(rename = "diskTotal")]
    pub disk_total: i64,
}

/// The REST error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: i32,
    pub message: String,
}

/// One written file in the `POST /files` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
}

/// RFC 3339 with a `Z` suffix and millisecond precision, as E2B returns.
pub mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_accepts_sdk_bodies() {
        let v2: NewSandbox = serde_json::from_str(
            r#"{"templateID":"base","timeout":120,"metadata":{"k":"v"},"envVars":{"FOO":"bar"}}"#,
        )
        .unwrap();
        assert_eq!(v2.timeout, Some(120));
        assert_eq!(v2.env_vars.unwrap()["FOO"], "bar");
        let old: NewSandbox = serde_json::from_str(
            r#"{"templateID":"base","allow_internet_access":true,"autoPause":false,"envVars":{},"metadata":{},"secure":true,"timeout":60,"mcp":null}"#,
        )
        .unwrap();
        assert_eq!(old.auto_pause, Some(false));
    }

    #[test]
    fn responses_carry_required_fields() {
        let s = Sandbox {
            template_id: "base".into(),
            sandbox_id: "i1".into(),
            client_id: "godel".into(),
            envd_version: ENVD_VERSION.into(),
            ..Default::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        for k in ["templateID", "sandboxID", "clientID", "envdVersion"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let d = SandboxDetail {
            template_id: "base".into(),
            alias: None,
            sandbox_id: "i1".into(),
            client_id: "godel".into(),
            started_at: t,
            end_at: t,
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            metadata: BTreeMap::new(),
            state: E2bState::Paused,
            envd_version: ENVD_VERSION.into(),
            envd_access_token: None,
            domain: None,
            lifecycle: None,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["startedAt"], "2026-01-02T03:04:05.500Z");
        assert_eq!(v["state"], "paused");
        assert_eq!(serde_json::from_value::<SandboxDetail>(v).unwrap(), d);
    }
}
