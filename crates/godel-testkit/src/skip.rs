//! Tests that cannot run here skip *visibly and countably*, and fail instead
//! where the environment promises everything.
//!
//! ```ignore
//! #[test]
//! fn needs_a_vm() {
//!     godel_testkit::require!(Need::Root, Need::Qemu);
//!     // ...
//! }
//! ```
//!
//! When a [`Need`] is unmet, [`require!`](crate::require) returns from the
//! test after printing `SKIPPED <test>: needs <what> (<how to get it>)` to
//! stderr and appending one line `<test>\t<need>\t<what>` to the file named
//! by `$GODEL_SKIP_LEDGER` (when set; `scripts/test.sh` sets it and prints a
//! summary). When `$GODEL_REQUIRE` lists the need's key (comma-separated:
//! `root,qemu,nft,mkfs`, or `all`), an unmet need fails the test instead, so a
//! machine that has everything cannot pass by skipping.

use std::io::Write;
use std::path::Path;

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Running as root (namespaces, cgroups, mounts).
    Root,
    /// `qemu-system-x86_64` and `qemu-img` on `PATH`.
    Qemu,
    /// `qemu-img` on `PATH` (key `qemu` too).
    QemuImg,
    /// `nft` on `PATH`.
    Nft,
    /// `mkfs.ext4` and `debugfs` (e2fsprogs) on `PATH`.
    Mkfs,
    /// A PostgreSQL server for tests: `$GODEL_TEST_POSTGRES_URL` ([`postgres_url`]).
    Postgres,
    /// Anything else: its `GODEL_REQUIRE` key, whether it is met, what it is
    /// and how to get it.
    Other {
        key: &'static str,
        met: bool,
        what: &'static str,
        how: &'static str,
    },
}

impl Need {
    /// The name `GODEL_REQUIRE` and the ledger use.
    pub fn key(&self) -> &'static str {
        match self {
            Need::Root => "root",
            Need::Qemu | Need::QemuImg => "qemu",
            Need::Nft => "nft",
            Need::Mkfs => "mkfs",
            Need::Postgres => "postgres",
            Need::Other { key, .. } => key,
        }
    }

    /// What is missing, in words.
    pub fn what(&self) -> &'static str {
        match self {
            Need::Root => "root",
            Need::Qemu => "qemu-system-x86_64 and qemu-img",
            Need::QemuImg => "qemu-img",
            Need::Nft => "nft",
            Need::Mkfs => "mkfs.ext4 and debugfs",
            Need::Postgres => "a PostgreSQL server ($GODEL_TEST_POSTGRES_URL)",
            Need::Other { what, .. } => what,
        }
    }

    /// How to get it.
    pub fn how(&self) -> &'static str {
        match self {
            Need::Root => "run the tests as root, e.g. sudo -E scripts/test.sh",
            Need::Qemu | Need::QemuImg => {
                "apt-get install qemu-system-x86 qemu-utils; scripts/setup.d/30-microvm.sh does it"
            }
            Need::Nft => "apt-get install nftables; scripts/setup.d/10-sandbox.sh does it",
            Need::Mkfs => "apt-get install e2fsprogs; scripts/setup.d/30-microvm.sh does it",
            Need::Postgres => {
                "scripts/postgres.sh start; export GODEL_TEST_POSTGRES_URL=$(scripts/postgres.sh url) (scripts/test.sh does it)"
            }
            Need::Other { how, .. } => how,
        }
    }

    /// Whether this machine has it.
    pub fn met(&self) -> bool {
        match self {
            Need::Root => nix::unistd::geteuid().is_root(),
            Need::Qemu => on_path("qemu-system-x86_64") && on_path("qemu-img"),
            Need::QemuImg => on_path("qemu-img"),
            Need::Nft => on_path("nft"),
            Need::Mkfs => on_path("mkfs.ext4") && on_path("debugfs"),
            Need::Postgres => postgres_url().is_some(),
            Need::Other { met, .. } => *met,
        }
    }
}

/// The PostgreSQL server tests may use (`$GODEL_TEST_POSTGRES_URL`), if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("GODEL_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh schema of its own in the test PostgreSQL database, as a URL
/// godel's store takes (`…?schema=NAME`).
pub fn postgres_schema_url(base: &str, tag: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{base}{sep}schema=t_{tag}_{}_{nanos}", std::process::id())
}

/// Whether `program` is an executable file in a `PATH` directory (or in
/// `/sbin`, `/usr/sbin`, which a non-root `PATH` often lacks).
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin"].map(Into::into))
        .any(|d| {
            std::fs::metadata(d.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether `$GODEL_REQUIRE` demands `key`.
fn required(key: &str) -> bool {
    std::env::var("GODEL_REQUIRE")
        .is_ok_and(|v| v.split(',').map(str::trim).any(|k| k == key || k == "all"))
}

/// The running test's name: `<test binary>::<libtest's name for it>` (the
/// test thread is named after the test), or `fallback` off a test thread.
pub fn current_test(fallback: &str) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        });
    match (std::thread::current().name(), binary) {
        (Some(t), Some(b)) if t != "main" => format!("{b}::{t}"),
        _ => fallback.to_string(),
    }
}

/// `true` when every need is met. Otherwise report the first unmet one for
/// the running test (stderr and the ledger; `fallback` names the test off a
/// test thread) and answer `false`, or panic when `$GODEL_REQUIRE` demands
/// it. [`require!`](crate::require) wraps this.
pub fn check(fallback: &str, needs: &[Need]) -> bool {
    let ledger = std::env::var_os("GODEL_SKIP_LEDGER").map(std::path::PathBuf::from);
    check_into(ledger.as_deref(), fallback, needs)
}

/// [`check`] with the ledger named (`None`: none).
fn check_into(ledger: Option<&Path>, fallback: &str, needs: &[Need]) -> bool {
    let Some(need) = needs.iter().find(|n| !n.met()) else {
        return true;
    };
    let test = current_test(fallback);
    let (key, what, how) = (need.key(), need.what(), need.how());
    if required(key) {
        panic!("{test} needs {what} and GODEL_REQUIRE demands {key:?}: {how}");
    }
    eprintln!("SKIPPED {test}: needs {what} ({how})");
    if let Some(ledger) = ledger {
        record(ledger, &format!("{test}\t{key}\t{what}\n"));
    }
    false
}

/// Append one line (one `write`, so parallel test processes do not interleave).
fn record(ledger: &Path, line: &str) {
    let res = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = res {
        eprintln!("cannot append to the skip ledger {}: {e}", ledger.display());
    }
}

/// The path of the function it is expanded in, without closure suffixes
/// (`escapes::user_namespace_is_unprivileged`); [`require!`](crate::require)'s
/// name for the test when it does not run on a libtest thread.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        fn name_of<T>(_: T) -> &'static str {
            ::std::any::type_name::<T>()
        }
        let mut name = name_of(here).trim_end_matches("::here");
        while let Some(n) = name.strip_suffix("::{{closure}}") {
            name = n;
        }
        name
    }};
}

/// Return from the enclosing function unless every
/// [`Need`](crate::skip::Need) is met; see [`crate::skip`].
/// `require!(else value; needs…)` returns `value` instead (for helpers that
/// answer an `Option`).
#[macro_export]
macro_rules! require {
    (else $ret:expr; $($need:expr),+ $(,)?) => {
        if !$crate::skip::check($crate::test_name!(), &[$($need),+]) {
            return $ret;
        }
    };
    ($($need:expr),+ $(,)?) => {
        if !$crate::skip::check($crate::test_name!(), &[$($need),+]) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keys_and_the_ledger() {
        assert_eq!(
            crate::test_name!(),
            "godel_testkit::skip::tests::names_keys_and_the_ledger"
        );
        assert_eq!(
            current_test("x"),
            "godel_testkit::skip::tests::names_keys_and_the_ledger"
        );
        assert!(on_path("sh"));
        let other = |met| Need::Other {
            key: "never",
            met,
            what: "a thing nobody has",
            how: "none",
        };
        let never = other(false);
        assert!(check("t", &[other(true)]));
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger");
        record(&ledger, "a\tnever\tx\n");
        record(&ledger, "b\tnever\tx\n");
        assert_eq!(
            std::fs::read_to_string(&ledger).unwrap(),
            "a\tnever\tx\nb\tnever\tx\n"
        );
        // Unmet and not demanded (this test never sets GODEL_REQUIRE=never).
        // It goes to the ledger it is given, not to the run's.
        if !required("never") {
            assert!(!check_into(Some(&ledger), "t", &[never]));
            let lines = std::fs::read_to_string(&ledger).unwrap();
            assert!(lines.ends_with("\tnever\ta thing nobody has\n"), "{lines}");
        }
    }
}
