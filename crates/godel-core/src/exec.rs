//! Exec: the request, the streamed events, the handle a provider returns
//! (stdin sender, event stream, signal sender) and `collect`, the buffered form.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Default exec timeout when the caller gives none.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// A command to run inside a runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv; `cmd[0]` is looked up in `PATH`.
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the workspace or absolute in the runtime's view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kill the whole process group after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Bytes written to stdin before it is closed (buffered form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Keep stdin open for streaming input through `ExecHandle::stdin`.
    #[serde(default)]
    pub interactive: bool,
    /// User to run as, where the runtime supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ExecRequest {
    pub fn new<I, S>(cmd: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            cmd: cmd.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_EXEC_TIMEOUT)
    }

    pub fn validate(&self) -> Result<()> {
        if self.cmd.is_empty() || self.cmd[0].is_empty() {
            return Err(Error::invalid("exec needs a command"));
        }
        if self.cmd.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid("exec arguments must not contain NUL bytes"));
        }
        if self.timeout_ms == Some(0) {
            return Err(Error::invalid("exec timeout must be above zero"));
        }
        Ok(())
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; `128 + signal` when killed by a signal.
    pub code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Killed because the timeout expired.
    #[serde(default)]
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// One event of a running command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExecEvent {
    Started {
        pid: u32,
    },
    Stdout {
        #[serde(with = "b64")]
        data: Bytes,
    },
    Stderr {
        #[serde(with = "b64")]
        data: Bytes,
    },
    Exit(ExitStatus),
    /// The exec failed after it started (the runtime died, the channel broke).
    Error(Error),
}

/// Output bytes are base64 on the wire so binary output survives JSON.
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// A running command.
pub struct ExecHandle {
    /// Process id as seen by the runtime, if known.
    pub pid: Option<u32>,
    /// Send stdin bytes; dropping it closes stdin. `None` when stdin is not kept open.
    pub stdin: Option<mpsc::Sender<Bytes>>,
    /// Send a signal number to the command's process group.
    pub signal: Option<mpsc::Sender<i32>>,
    /// Output events, ending with `Exit` (or `Error`).
    pub events: BoxStream<'static, ExecEvent>,
}

/// The buffered form of an exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    #[serde(default)]
    pub timed_out: bool,
}

impl ExecHandle {
    /// Drain the events into an `ExecOutput`. A timeout becomes a `TIMEOUT` error.
    pub async fn collect(mut self) -> Result<ExecOutput> {
        drop(self.stdin.take());
        let mut out = Vec::new();
        let mut err = Vec::new();
        while let Some(ev) = self.events.next().await {
            match ev {
                ExecEvent::Started { .. } => {}
                ExecEvent::Stdout { data } => out.extend_from_slice(&data),
                ExecEvent::Stderr { data } => err.extend_from_slice(&data),
                ExecEvent::Error(e) => return Err(e),
                ExecEvent::Exit(st) => {
                    let output = ExecOutput {
                        exit_code: st.code,
                        signal: st.signal,
                        stdout: String::from_utf8_lossy(&out).into_owned(),
                        stderr: String::from_utf8_lossy(&err).into_owned(),
                        duration_ms: st.duration_ms,
                        timed_out: st.timed_out,
                    };
                    if st.timed_out {
                        return Err(Error::timeout(format!(
                            "command timed out after {} ms and was killed",
                            st.duration_ms
                        )));
                    }
                    return Ok(output);
                }
            }
        }
        Err(Error::exec("command output ended without an exit status"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(events: Vec<ExecEvent>) -> ExecHandle {
        ExecHandle {
            pid: None,
            stdin: None,
            signal: None,
            events: futures::stream::iter(events).boxed(),
        }
    }

    #[tokio::test]
    async fn collect_buffers_output() {
        let h = handle(vec![
            ExecEvent::Started { pid: 7 },
            ExecEvent::Stdout {
                data: Bytes::from_static(b"a"),
            },
            ExecEvent::Stderr {
                data: Bytes::from_static(b"e"),
            },
            ExecEvent::Stdout {
                data: Bytes::from_static(b"b"),
            },
            ExecEvent::Exit(ExitStatus {
                code: 3,
                signal: None,
                timed_out: false,
                duration_ms: 5,
            }),
        ]);
        let out = h.collect().await.unwrap();
        assert_eq!(out.stdout, "ab");
        assert_eq!(out.stderr, "e");
        assert_eq!(out.exit_code, 3);
    }

    #[tokio::test]
    async fn collect_reports_timeout_and_truncation() {
        let h = handle(vec![ExecEvent::Exit(ExitStatus {
            code: 137,
            signal: Some(9),
            timed_out: true,
            duration_ms: 100,
        })]);
        assert_eq!(
            h.collect().await.unwrap_err().code,
            crate::ErrorCode::Timeout
        );
        let h = handle(vec![ExecEvent::Stdout {
            data: Bytes::from_static(b"a"),
        }]);
        assert_eq!(
            h.collect().await.unwrap_err().code,
            crate::ErrorCode::ExecutionError
        );
    }

    #[test]
    fn events_serialize_binary_safely() {
        let ev = ExecEvent::Stdout {
            data: Bytes::from_static(&[0, 255, 10]),
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"{"type":"stdout","data":"AP8K"}"#);
        assert_eq!(serde_json::from_str::<ExecEvent>(&json).unwrap(), ev);
    }

    #[test]
    fn validate_exec() {
        assert!(ExecRequest::default().validate().is_err());
        assert!(ExecRequest::new(["true"]).validate().is_ok());
        let mut r = ExecRequest::new(["true"]);
        r.timeout_ms = Some(0);
        assert!(r.validate().is_err());
    }
}
