//! The one error type of godel: a stable machine code, a human message and a
//! `retryable` flag (SPEC-002 §3.3). HTTP status mapping lives here too so
//! every surface (REST, CLI exit codes, E2B) agrees on it.

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. The wire form is SCREAMING_SNAKE_CASE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    NotFound,
    InvalidArgument,
    SpawnError,
    ExecutionError,
    ResourceExhausted,
    Timeout,
    Unavailable,
    Conflict,
    PermissionDenied,
    Unauthenticated,
    BudgetExceeded,
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::NotFound,
        ErrorCode::InvalidArgument,
        ErrorCode::SpawnError,
        ErrorCode::ExecutionError,
        ErrorCode::ResourceExhausted,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Conflict,
        ErrorCode::PermissionDenied,
        ErrorCode::Unauthenticated,
        ErrorCode::BudgetExceeded,
        ErrorCode::Internal,
    ];

    /// The wire name, e.g. `NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::SpawnError => "SPAWN_ERROR",
            ErrorCode::ExecutionError => "EXECUTION_ERROR",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::BudgetExceeded => "BUDGET_EXCEEDED",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Whether a caller may retry the same request (SPEC-002 §3.3).
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::SpawnError
                | ErrorCode::ResourceExhausted
                | ErrorCode::Timeout
                | ErrorCode::Unavailable
        )
    }

    /// The HTTP status every surface uses for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::NotFound => 404,
            ErrorCode::InvalidArgument => 400,
            ErrorCode::SpawnError => 502,
            ErrorCode::ExecutionError => 500,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Timeout => 504,
            ErrorCode::Unavailable => 503,
            ErrorCode::Conflict => 409,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::BudgetExceeded => 402,
            ErrorCode::Internal => 500,
        }
    }

    /// The process exit code the CLI uses for this error (distinct per code, all non-zero).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::InvalidArgument => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::Conflict => 4,
            ErrorCode::PermissionDenied | ErrorCode::Unauthenticated => 5,
            ErrorCode::ResourceExhausted | ErrorCode::BudgetExceeded => 6,
            ErrorCode::Timeout => 124,
            ErrorCode::Unavailable => 69,
            ErrorCode::SpawnError | ErrorCode::ExecutionError | ErrorCode::Internal => 1,
        }
    }

    /// Parse a wire name back into a code.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A godel error: code + message + retryable (+ the runtime it concerns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
}

/// Result alias used across godel.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error with the code's default retryability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            retryable: code.default_retryable(),
            runtime_id: None,
        }
    }

    /// Attach the runtime id this error concerns.
    pub fn with_runtime(mut self, id: impl Into<String>) -> Self {
        self.runtime_id = Some(id.into());
        self
    }

    /// Override retryability.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::new(ErrorCode::NotFound, what)
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidArgument, msg)
    }
    pub fn spawn(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::SpawnError, msg)
    }
    pub fn exec(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::ExecutionError, msg)
    }
    pub fn exhausted(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::ResourceExhausted, msg)
    }
    pub fn timeout(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::Timeout, msg)
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unavailable, msg)
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::Conflict, msg)
    }
    pub fn denied(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::PermissionDenied, msg)
    }
    pub fn unauthenticated(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unauthenticated, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, msg)
    }

    /// Wrap an I/O error with context, mapping well-known kinds to codes.
    pub fn io(context: impl std::fmt::Display, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let code = match err.kind() {
            K::NotFound => ErrorCode::NotFound,
            K::PermissionDenied => ErrorCode::PermissionDenied,
            K::AlreadyExists => ErrorCode::Conflict,
            K::InvalidInput | K::InvalidData => ErrorCode::InvalidArgument,
            K::TimedOut => ErrorCode::Timeout,
            K::StorageFull | K::QuotaExceeded => ErrorCode::ResourceExhausted,
            _ => ErrorCode::Internal,
        };
        Error::new(code, format!("{context}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_ne!(c.exit_code(), 0);
        }
    }

    #[test]
    fn retryable_follows_spec() {
        assert!(Error::spawn("x").retryable);
        assert!(Error::timeout("x").retryable);
        assert!(!Error::not_found("x").retryable);
        assert!(!Error::exec("x").retryable);
        assert_eq!(Error::not_found("x").code.http_status(), 404);
    }

    #[test]
    fn io_errors_map_to_codes() {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(Error::io("open a", &e).code, ErrorCode::NotFound);
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(Error::io("open a", &e).code, ErrorCode::PermissionDenied);
    }
}
