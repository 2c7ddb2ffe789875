//! `godel bench replicas`: what the run measured (owner vs forwarded latency
//! per path, spawn through the owner, take-over rounds after SIGKILL), how
//! it is printed, and the pure helpers the run uses: which PostgreSQL URL to
//! take, the per-run schema, and the URL without godel's own `schema=`.

use std::collections::BTreeMap;

use godel_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::LatencySummary;

/// One request path measured through the owner and through a replica that
/// forwards to it, in the same run, interleaved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathPair {
    pub path: String,
    /// Sent to the replica that owns the sandbox.
    pub owner: LatencySummary,
    /// Sent to another replica, which forwards it to the owner.
    pub forwarded: LatencySummary,
    /// `forwarded.p50_ms - owner.p50_ms`: what one forwarding hop adds.
    pub added_p50_ms: f64,
}

impl PathPair {
    pub fn new(path: &str, owner: LatencySummary, forwarded: LatencySummary) -> PathPair {
        PathPair {
            path: path.to_string(),
            added_p50_ms: added_ms(owner.p50_ms, forwarded.p50_ms),
            owner,
            forwarded,
        }
    }
}

/// `forwarded - owner`, milliseconds rounded to the microsecond.
pub fn added_ms(owner: f64, forwarded: f64) -> f64 {
    ((forwarded - owner) * 1e3).round() / 1e3
}

/// One take-over: replica A killed with SIGKILL, one of its kata sandboxes
/// polled through replica C every 50 ms. Times are milliseconds after the kill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TakeoverRound {
    pub round: usize,
    pub sandbox: String,
    /// First `exec true` through C that succeeded.
    pub exec_ok_ms: Option<f64>,
    /// The replica that answered it (`x-godel-replica`, else C itself).
    pub exec_answered_by: Option<String>,
    /// First status read through C whose `owner` was B or C.
    pub owner_moved_ms: Option<f64>,
    pub new_owner: Option<String>,
    /// When A's lease ran out (the take-over event's `lease_until`).
    pub lease_ran_out_ms: Option<f64>,
    /// When the `replica_takeover` event was stored (after the adoption).
    pub takeover_event_ms: Option<f64>,
    /// The adoption itself, as the event reports it.
    pub adopt_ms: Option<f64>,
    /// `/v1/replicas` first listed A as not live (when that endpoint exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_not_live_ms: Option<f64>,
    /// `/v1/replicas` first showed A taken over by B or C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_owner_ms: Option<f64>,
    /// Polls until both answers were seen.
    pub polls: usize,
    /// Unsuccessful poll answers by kind (`exec: HTTP 503 UNAVAILABLE` ...).
    pub failed_polls: BTreeMap<String, usize>,
    /// The first answer of each kind of failure, for the record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failure_samples: BTreeMap<String, String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicasReport {
    pub bench: String,
    pub replicas: usize,
    pub runtime: String,
    pub samples: usize,
    pub lease_secs: f64,
    /// Renewal and take-over scan period: a third of the lease.
    pub tick_secs: f64,
    pub definition: String,
    /// P50/P95/P99 of the forwarded exec, the headline for the report.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// `POST /v1/runtimes` through A: a spawn is served by the replica called.
    pub spawn_owner: LatencySummary,
    pub paths: Vec<PathPair>,
    pub takeover: Vec<TakeoverRound>,
    /// What the take-over time cannot go below, and why.
    pub takeover_floor: String,
    /// Answers whose `x-godel-replica` header was wrong (present on a direct
    /// answer, absent or naming another replica on a forwarded one).
    pub header_failures: Vec<String>,
    pub header_checks: usize,
    pub errors: Vec<String>,
    /// WARN and ERROR lines of the replicas' logs (`A: …`), at most 40.
    pub log_lines: Vec<String>,
    pub pods_left: usize,
    pub schema: String,
    pub schema_dropped: bool,
    pub load_avg_before: String,
    pub build: String,
}

impl ReplicasReport {
    /// The run failed when a header check or a request failed.
    pub fn ok(&self) -> bool {
        self.header_failures.is_empty() && self.errors.is_empty()
    }

    pub fn print(&self) {
        println!(
            "godel bench replicas: {} replicas over PostgreSQL, runtime {}, {} samples per path ({} build)",
            self.replicas, self.runtime, self.samples, self.build
        );
        println!("{}", self.spawn_owner.line("spawn through the owner (A)"));
        println!(
            "{:<22} {:>28} {:>28} {:>12}",
            "path", "owner p50/p95/p99 ms", "forwarded p50/p95/p99 ms", "added p50"
        );
        let trio =
            |s: &LatencySummary| format!("{:.2} / {:.2} / {:.2}", s.p50_ms, s.p95_ms, s.p99_ms);
        for p in &self.paths {
            println!(
                "{:<22} {:>28} {:>28} {:>9.2} ms",
                p.path,
                trio(&p.owner),
                trio(&p.forwarded),
                p.added_p50_ms
            );
        }
        println!(
            "x-godel-replica checked on {} answers: {} wrong",
            self.header_checks,
            self.header_failures.len()
        );
        for f in self.header_failures.iter().take(5) {
            println!("  {f}");
        }
        println!(
            "take-over after SIGKILL of A (lease {:.1} s, renew/scan every {:.2} s):",
            self.lease_secs, self.tick_secs
        );
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        println!(
            "{:<6} {:>14} {:>14} {:>14} {:>14} {:>10}  answered by / new owner",
            "round", "lease out ms", "event ms", "exec ok ms", "owner B|C ms", "adopt ms"
        );
        for r in &self.takeover {
            println!(
                "{:<6} {:>14} {:>14} {:>14} {:>14} {:>10}  {} / {}",
                r.round,
                opt(r.lease_ran_out_ms),
                opt(r.takeover_event_ms),
                opt(r.exec_ok_ms),
                opt(r.owner_moved_ms),
                opt(r.adopt_ms),
                r.exec_answered_by.as_deref().unwrap_or("-"),
                r.new_owner.as_deref().unwrap_or("-"),
            );
            if r.replicas_not_live_ms.is_some() || r.replicas_owner_ms.is_some() {
                println!(
                    "       /v1/replicas: A not live at {} ms, A taken over by B or C at {} ms",
                    opt(r.replicas_not_live_ms),
                    opt(r.replicas_owner_ms)
                );
            }
            if !r.failed_polls.is_empty() {
                let f: Vec<String> = r
                    .failed_polls
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect();
                println!("       meanwhile: {}", f.join(", "));
                for (k, m) in &r.failure_samples {
                    println!("         first {k}: {m}");
                }
            }
        }
        println!("{}", self.takeover_floor);
        if !self.errors.is_empty() {
            println!("errors ({}):", self.errors.len());
            for e in self.errors.iter().take(5) {
                println!("  {e}");
            }
        }
        if !self.log_lines.is_empty() {
            println!(
                "replica log warnings and errors ({}):",
                self.log_lines.len()
            );
            for l in &self.log_lines {
                println!("  {l}");
            }
        }
        println!(
            "pods left in the fake cluster: {}; schema {} {}; load average before: {}",
            self.pods_left,
            self.schema,
            if self.schema_dropped {
                "dropped"
            } else {
                "NOT dropped"
            },
            self.load_avg_before
        );
    }
}

/// The floor of a take-over, in words: A renews every third of a lease, so
/// its lease runs out between 2/3 and 1 lease after the kill; the first
/// request for one of its sandboxes after that takes it over at once, and
/// without requests a survivor's next scan does, up to a third of a lease later.
pub fn takeover_floor(lease_secs: f64) -> String {
    format!(
        "floor: A's lease runs out {:.2}–{:.2} s after the kill (renewed every {:.2} s); the first request for one of its sandboxes then takes it over at once (without requests: a survivor's next scan, up to {:.2} s later): expect {:.2}–{:.2} s plus the adoption",
        lease_secs * 2.0 / 3.0,
        lease_secs,
        lease_secs / 3.0,
        lease_secs / 3.0,
        lease_secs * 2.0 / 3.0,
        lease_secs * 4.0 / 3.0
    )
}

/// The WARN and ERROR lines of a `godel serve` log, prefixed with `who`
/// (ANSI colours removed).
pub fn log_problems(who: &str, log: &str) -> Vec<String> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(|l| format!("{who}: {}", l.trim()))
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The PostgreSQL URL: the flag, else `$GODEL_TEST_POSTGRES_URL`.
pub fn database_url(flag: Option<&str>, env: Option<&str>) -> Result<String> {
    let url = flag
        .or(env)
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Error::invalid(
                "bench replicas needs PostgreSQL: pass --database postgres://USER@HOST:PORT/DB or set GODEL_TEST_POSTGRES_URL (a private server: scripts/postgres.sh start; scripts/postgres.sh url)",
            )
        })?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::invalid(format!(
            "bench replicas: {url:?} is not a postgres:// URL (replicas share a PostgreSQL store)"
        )));
    }
    Ok(url.to_string())
}

/// A fresh schema name for one run: `bench_` and 12 hex digits.
pub fn schema_name(seed: u128) -> String {
    // splitmix64 of the seed, so close seeds give unrelated names.
    let mut z = (seed as u64) ^ ((seed >> 64) as u64);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("bench_{:012x}", z & 0xffff_ffff_ffff)
}

/// `url` with its query's `schema=` parameter (if any) removed.
pub fn without_schema(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("schema="))
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// `url` pointing at `schema` (replacing any `schema=` it had).
pub fn with_schema(url: &str, schema: &str) -> String {
    let base = without_schema(url);
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_comes_from_the_flag_then_the_environment() {
        let pg = "postgres://godel@127.0.0.1:55432/godel_test";
        assert_eq!(database_url(Some(pg), Some("postgres://x/y")).unwrap(), pg);
        assert_eq!(database_url(None, Some(pg)).unwrap(), pg);
        assert_eq!(
            database_url(Some(" "), Some(pg)).unwrap_err().code,
            godel_core::ErrorCode::InvalidArgument
        );
        let e = database_url(None, None).unwrap_err().message;
        assert!(
            e.contains("--database") && e.contains("GODEL_TEST_POSTGRES_URL"),
            "{e}"
        );
        assert!(database_url(Some("/tmp/godel.db"), None).is_err());
    }

    #[test]
    fn schema_parameters_are_replaced_not_stacked() {
        let base = "postgres://u@h:5/db";
        assert_eq!(
            with_schema(base, "bench_1"),
            "postgres://u@h:5/db?schema=bench_1"
        );
        assert_eq!(
            with_schema("postgres://u@h/db?sslmode=disable&schema=old", "bench_2"),
            "postgres://u@h/db?sslmode=disable&schema=bench_2"
        );
        assert_eq!(
            without_schema("postgres://u@h/db?schema=x"),
            "postgres://u@h/db"
        );
        assert_eq!(
            without_schema("postgres://u@h/db?schema=x&sslmode=disable"),
            "postgres://u@h/db?sslmode=disable"
        );
        assert_eq!(without_schema(base), base);
    }

    #[test]
    fn schema_names_are_safe_and_differ() {
        let a = schema_name(1);
        let b = schema_name(2);
        assert_ne!(a, b);
        for s in [&a, &b] {
            assert_eq!(s.len(), "bench_".len() + 12);
            assert!(
                s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{s}"
            );
        }
    }

    #[test]
    fn log_problems_keep_warnings_and_errors_without_colours() {
        let log = "2024-01-01T00:00:00Z  INFO godel: up\n\
                   \u{1b}[2m2024\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m took over a replica\n\
                   2024 ERROR store: lost\n";
        assert_eq!(
            log_problems("B", log),
            vec![
                "B: 2024  WARN took over a replica",
                "B: 2024 ERROR store: lost"
            ]
        );
    }

    #[test]
    fn added_latency_is_the_difference_of_medians() {
        let s = |p50: f64| LatencySummary {
            n: 1,
            p50_ms: p50,
            ..Default::default()
        };
        let p = PathPair::new("exec", s(1.25), s(2.0));
        assert_eq!(p.added_p50_ms, 0.75);
        assert_eq!(added_ms(0.3, 0.1), -0.2);
        let f = takeover_floor(3.0);
        assert!(f.contains("2.00–4.00 s"), "{f}");
    }
}
