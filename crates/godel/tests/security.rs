//! API probes against a real daemon on TCP: path traversal (`..`, absolute
//! paths, symlinks planted by the agent pointing at the host, tar entries
//! escaping) on every file route read from the checked-in OpenAPI document;
//! oversized, malformed and unknown-field bodies; token brute force, which
//! is rate limited per address. Nothing outside the workspace is read or
//! written, every refusal is a 4xx with a stable code, and the daemon keeps
//! serving. (Cross-team access on every route is `cross_team.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Daemon, make_repo};

/// One request; status, headers+body as text, body bytes.
fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    ctype: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a big body.
    let _ = s.write_all(body);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    (status, text)
}

fn code_of(text: &str) -> String {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn tar_with(entries: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    if let Some((name, target)) = link {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        // set_link_name refuses nothing; set_path refuses `..`, so write names raw.
        h.set_link_name(target).unwrap();
        raw_name(&mut h, name);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        raw_name(&mut h, name);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn raw_name(h: &mut tar::Header, name: &str) {
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name = [0; 100];
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
}

fn host_untouched(dir: &Path, secret: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "a file appeared on the host: {left:?}");
    assert_eq!(
        std::fs::read_to_string(secret).unwrap(),
        "host-secret-7c1e\n"
    );
}

#[test]
fn path_traversal_on_every_file_route_stays_in_the_workspace() {
    let d = Daemon::start_tcp(&[]);
    let addr = d.tcp.clone().unwrap();
    let repo = make_repo(d.home());
    let tok = d.last_line(&["token", "create", "--team", "alpha"]);
    let rt = d.last_line(&["spawn", "--repo", repo.to_str().unwrap(), "--team", "alpha"]);

    // A host directory with a secret the agent must never reach.
    let host = tempfile::Builder::new()
        .prefix("godel-sec-host-")
        .tempdir()
        .unwrap();
    let secret = host.path().join("secret.txt");
    std::fs::write(&secret, "host-secret-7c1e\n").unwrap();
    let hd = host.path().display().to_string();
    // Links planted by the agent: to the host file, the host dir, the root, the parent.
    d.ok(&[
        "exec", &rt, "--", "sh", "-c",
        &format!("ln -s {hd}/secret.txt lfile; ln -s {hd} ldir; ln -s / lroot; ln -s .. lup; mkdir -p sub; echo in > sub/in.txt"),
    ]);

    let evil_read = [
        "../../../../../../etc/passwd".to_string(),
        format!("../../../../../..{hd}/secret.txt"),
        format!("{hd}/secret.txt"),
        "lfile".into(),
        "ldir/secret.txt".into(),
        format!("lroot{hd}/secret.txt"),
        "lup/lup/lup/lup/etc/hostname".into(),
        "sub/../../../../../../etc/passwd".into(),
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd".into(),
        "..%2f..%2f..%2f..%2fetc%2fpasswd".into(),
        "sub/%00/../x".into(),
    ];
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let leaks = |text: &str| {
        text.contains("host-secret-7c1e")
            || (!host_passwd.is_empty() && text.contains(host_passwd.trim()))
    };
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let last = path.rsplit('/').next().unwrap();
        if !matches!(last, "files" | "ls" | "stat" | "mkdir" | "rename" | "tar") {
            continue;
        }
        let route = path.replace("{id}", &rt);
        for (method, _) in ops.as_object().unwrap() {
            let m = method.to_uppercase();
            for (i, p) in evil_read.iter().enumerate() {
                let enc = if p.contains('%') {
                    p.clone()
                } else {
                    p.replace(' ', "%20")
                };
                let (q, body, ctype): (String, Vec<u8>, &str) = match (m.as_str(), last) {
                    ("POST", "rename") if i % 2 == 0 => (
                        format!("?from=sub/in.txt&to={enc}"),
                        vec![],
                        "application/json",
                    ),
                    ("POST", "rename") => (
                        format!("?from={enc}&to=stolen.txt"),
                        vec![],
                        "application/json",
                    ),
                    ("PUT", "tar") => (
                        format!("?path={enc}"),
                        tar_with(&[("pwned.txt", b"x")], None),
                        "application/x-tar",
                    ),
                    ("PUT", _) => (
                        format!("?path={enc}"),
                        b"pwned".to_vec(),
                        "application/octet-stream",
                    ),
                    _ => (format!("?path={enc}"), vec![], "application/json"),
                };
                let (status, text) = call(&addr, &m, &format!("{route}{q}"), &tok, ctype, &body);
                assert!(
                    status != 0 && status < 500,
                    "{m} {route}{q}: status {status}:\n{text}"
                );
                assert!(!leaks(&text), "{m} {route}{q} leaked host content:\n{text}");
                host_untouched(host.path(), &secret);
                checked += 1;
            }
        }
    }
    assert!(checked >= 8 * evil_read.len(), "only {checked} probes");

    // Tar archives whose entries escape: `..` names, absolute names, a
    // symlink entry followed by a file through it.
    for t in [
        tar_with(
            &[("../../../../../../tmp/godel-sec-escape.txt", b"x")],
            None,
        ),
        tar_with(&[(&format!("{hd}/pwned.txt")[1..], b"x")], None),
        tar_with(&[("esc/pwned.txt", b"x")], Some(("esc", &hd))),
    ] {
        let (status, text) = call(
            &addr,
            "PUT",
            &format!("/v1/runtimes/{rt}/tar?path=."),
            &tok,
            "application/x-tar",
            &t,
        );
        assert!(status < 500 && status != 0, "tar upload: {status}\n{text}");
        host_untouched(host.path(), &secret);
        assert!(!Path::new("/tmp/godel-sec-escape.txt").exists());
    }
    // Downloading a tar of the workspace does not follow the planted links.
    let (status, text) = call(
        &addr,
        "GET",
        &format!("/v1/runtimes/{rt}/tar?path=."),
        &tok,
        "application/json",
        b"",
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        !leaks(&text),
        "the workspace tar followed a link to the host"
    );
    // The daemon still serves, the workspace is intact.
    assert_eq!(d.ok(&["read", &rt, "sub/in.txt"]), "in\n");
}

/// method, path, body, content type, accepted statuses, expected code ("" any).
type BodyCase = (
    &'static str,
    String,
    Vec<u8>,
    &'static str,
    &'static [u16],
    &'static str,
);

#[test]
fn oversized_malformed_and_unknown_field_bodies_are_refused_with_codes() {
    let d = Daemon::start_tcp(&[]);
    let addr = d.tcp.clone().unwrap();
    let repo = make_repo(d.home());
    let tok = d.last_line(&["token", "create", "--team", "alpha"]);
    let rt = d.last_line(&["spawn", "--repo", repo.to_str().unwrap(), "--team", "alpha"]);
    let before = d.ok(&["ls", "--json"]);
    let big = format!(
        r#"{{"runtime":"worktree","labels":{{"x":"{}"}}}}"#,
        "a".repeat(2 << 20)
    );
    let exec = format!("/v1/runtimes/{rt}/exec");
    let cases: Vec<BodyCase> = vec![
        (
            "POST",
            "/v1/runtimes".into(),
            big.into_bytes(),
            "application/json",
            &[413],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/runtimes".into(),
            br#"{"runtime":"#.to_vec(),
            "application/json",
            &[400, 422],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/runtimes".into(),
            b"\xff\xfe\x00garbage".to_vec(),
            "application/json",
            &[400, 422],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/runtimes".into(),
            br#"{"runtime":"worktree","bogus_field":1}"#.to_vec(),
            "application/json",
            &[400, 422],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/runtimes".into(),
            br#"{"runtime":7}"#.to_vec(),
            "application/json",
            &[400, 422],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/runtimes".into(),
            br#"[1,2,3]"#.to_vec(),
            "application/json",
            &[400, 422],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/runtimes".into(),
            br#"{"runtime":"worktree"}"#.to_vec(),
            "text/plain",
            &[400, 415],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            exec.clone(),
            br#"{"cmd":["true"],"shell":true}"#.to_vec(),
            "application/json",
            &[400, 422],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            exec.clone(),
            br#"{"cmd":[]}"#.to_vec(),
            "application/json",
            &[400],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            exec.clone(),
            format!(r#"{{"cmd":["true"],"nest":{}}}"#, "[".repeat(10_000)).into_bytes(),
            "application/json",
            &[400, 422],
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/teams".into(),
            br#"{"name":"../../etc"}"#.to_vec(),
            "application/json",
            &[400, 403],
            "",
        ),
        (
            "GET",
            format!("/v1/runtimes/{rt}/files?path=x&extra=1"),
            vec![],
            "application/json",
            &[400],
            "INVALID_ARGUMENT",
        ),
    ];
    for (m, path, body, ctype, statuses, code) in cases {
        let (status, text) = call(&addr, m, &path, &tok, ctype, &body);
        let shown = &text[..text.len().min(400)];
        assert!(
            statuses.contains(&status),
            "{m} {path}: status {status}, want {statuses:?}:\n{shown}"
        );
        if !code.is_empty() {
            assert_eq!(code_of(&text), code, "{m} {path}:\n{shown}");
        }
    }
    // The unknown field is named in the message.
    let (_, text) = call(
        &addr,
        "POST",
        "/v1/runtimes",
        &tok,
        "application/json",
        br#"{"runtime":"worktree","bogus_field":1}"#,
    );
    assert!(text.contains("bogus_field"), "{text}");
    // Nothing changed, the daemon answers.
    assert_eq!(d.ok(&["ls", "--json"]), before);
    d.ok(&["exec", &rt, "--", "true"]);
}

#[test]
fn token_brute_force_is_rate_limited_per_address() {
    let d = Daemon::start_tcp(&[]);
    let addr = d.tcp.clone().unwrap();
    let good = d.last_line(&["token", "create", "--team", "alpha"]);
    let (s, _) = call(&addr, "GET", "/v1/runtimes", &good, "application/json", b"");
    assert_eq!(s, 200);
    let mut statuses = Vec::new();
    for i in 0..40 {
        let guess = format!("e2b_{:040x}", 0xdead_beef_u64 * (i + 1));
        let (s, text) = call(
            &addr,
            "GET",
            "/v1/runtimes",
            &guess,
            "application/json",
            b"",
        );
        if s == 429 {
            assert_eq!(code_of(&text), "RESOURCE_EXHAUSTED", "{text}");
            assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
        }
        statuses.push(s);
    }
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .expect("never rate limited");
    assert!(
        first_429 <= 20,
        "limited only after {first_429} guesses: {statuses:?}"
    );
    assert!(
        statuses[..first_429].iter().all(|s| *s == 401),
        "{statuses:?}"
    );
    assert!(
        statuses[first_429..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    // While blocked, a right guess looks like a wrong one.
    let (s, _) = call(&addr, "GET", "/v1/runtimes", &good, "application/json", b"");
    assert_eq!(s, 429, "a valid token must not be told apart while blocked");
    // The Unix socket (the owner) is not affected.
    d.ok(&["ls"]);
}
