//! End-to-end: the CLI invocations of the spine against a real daemon,
//! including a `kill -9` of the daemon and a restart.

mod common;

use common::{Daemon, make_repo, stderr, stdout};

#[test]
fn cli_end_to_end_survives_kill_9() {
    let mut d = Daemon::start(&[]);
    let repo = make_repo(d.home());
    let repo_s = repo.to_str().unwrap();

    // spawn prints the id as its last line; the ref is honoured.
    let id = d.last_line(&[
        "spawn",
        "--runtime",
        "worktree",
        "--repo",
        repo_s,
        "--ref",
        "v1",
        "--env",
        "GREETING=hi",
        "--label",
        "owner=e2e",
    ]);
    assert!(id.starts_with("rt-"), "{id}");
    assert!(
        !d.ok(&["exec", &id, "--", "ls"]).contains("later.txt"),
        "ref v1 must not have later.txt"
    );

    // exec streams stdout/stderr separately and exits with the command's code.
    let out = d.run(&[
        "exec",
        &id,
        "--env",
        "X=1",
        "--",
        "sh",
        "-c",
        "echo out $GREETING $X; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "out hi 1\n");
    assert_eq!(stderr(&out), "err\n");
    // cwd
    d.ok(&["exec", &id, "--", "mkdir", "-p", "deep/er"]);
    assert_eq!(
        d.ok(&["exec", &id, "--cwd", "deep", "--", "sh", "-c", "ls"]),
        "er\n"
    );

    // write (stdin → file, parents created) and read.
    let w = d.run_stdin(
        &["write", &id, "notes/today/a.txt"],
        b"payload \x00\x01 binary",
    );
    assert!(w.status.success(), "{}", stderr(&w));
    let r = d.run(&["read", &id, "notes/today/a.txt"]);
    assert_eq!(r.stdout, b"payload \x00\x01 binary");
    // also through the agent's absolute view
    assert_eq!(
        d.run(&["read", &id, "/home/user/notes/today/a.txt"]).stdout,
        b"payload \x00\x01 binary"
    );

    // cp: a local directory in, a remote directory out, single files both ways.
    let local = d.home().join("local");
    std::fs::create_dir_all(local.join("tree/inner")).unwrap();
    std::fs::write(local.join("tree/inner/f.txt"), "F").unwrap();
    std::fs::write(local.join("single.txt"), "S").unwrap();
    d.ok(&[
        "cp",
        local.join("tree").to_str().unwrap(),
        &format!("{id}:uploaded"),
    ]);
    assert_eq!(
        d.ok(&["exec", &id, "--", "cat", "uploaded/inner/f.txt"]),
        "F"
    );
    d.ok(&[
        "cp",
        local.join("single.txt").to_str().unwrap(),
        &format!("{id}:one.txt"),
    ]);
    assert_eq!(d.ok(&["read", &id, "one.txt"]), "S");
    let back = d.home().join("back");
    d.ok(&["cp", &format!("{id}:notes"), back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(back.join("today/a.txt")).unwrap(),
        b"payload \x00\x01 binary"
    );
    let back_file = d.home().join("back-one.txt");
    d.ok(&["cp", &format!("{id}:one.txt"), back_file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back_file).unwrap(), "S");

    // ls / status (human and --json).
    assert!(d.ok(&["ls"]).contains(&id));
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["status", &id, "--json"])).unwrap();
    assert_eq!(st["state"], "running");
    assert_eq!(st["spec"]["labels"]["owner"], "e2e");

    // snapshot, change, restore shows the old state; fork gives N independent runtimes.
    d.ok(&["exec", &id, "--", "sh", "-c", "echo v1 > state.txt"]);
    let snap = d.last_line(&["snapshot", "create", &id, "--name", "before"]);
    assert!(snap.starts_with("snap-"), "{snap}");
    d.ok(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo v2 > state.txt; rm one.txt",
    ]);
    assert!(d.ok(&["snapshot", "ls", &id]).contains(&snap));
    let restored = d.last_line(&["restore", &snap]);
    assert_ne!(restored, id);
    assert_eq!(d.ok(&["read", &restored, "state.txt"]), "v1\n");
    assert_eq!(d.ok(&["read", &restored, "one.txt"]), "S");
    let forks: Vec<String> = d
        .ok(&["fork", &snap, "-n", "3"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(forks.len(), 3);
    for (i, f) in forks.iter().enumerate() {
        d.ok(&[
            "exec",
            f,
            "--",
            "sh",
            "-c",
            &format!("echo fork{i} > state.txt"),
        ]);
    }
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(d.ok(&["read", f, "state.txt"]), format!("fork{i}\n"));
    }

    // kill -9 the daemon, start it again: everything is still there and works.
    d.kill9();
    d.spawn_serve();
    let listed = d.ok(&["ls"]);
    for r in [&id, &restored] {
        assert!(
            listed.contains(r.as_str()),
            "{r} missing after restart:\n{listed}\n{}",
            d.log()
        );
    }
    assert!(d.ok(&["snapshot", "ls"]).contains(&snap));
    assert_eq!(d.ok(&["exec", &id, "--", "cat", "state.txt"]), "v2\n");
    assert_eq!(d.ok(&["read", &restored, "state.txt"]), "v1\n");

    // rm, snapshot rm.
    d.ok(&["rm", &restored]);
    let st: serde_json::Value =
        serde_json::from_str(&d.ok(&["status", &restored, "--json"])).unwrap();
    assert_eq!(st["state"], "terminated");
    assert!(!d.ok(&["ls"]).contains(&restored));
    for f in &forks {
        d.ok(&["rm", f]);
    }
    d.ok(&["snapshot", "rm", &snap]);
    assert!(!d.ok(&["snapshot", "ls"]).contains(&snap));
    // graceful stop on SIGTERM
    assert!(d.stop().success());
}

#[test]
fn doctor_names_every_runtime() {
    let d = Daemon::start(&[]);
    let out: Vec<serde_json::Value> = serde_json::from_str(&d.ok(&["doctor", "--json"])).unwrap();
    let names: Vec<&str> = out.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for n in ["worktree", "microvm", "kata", "e2b"] {
        assert!(names.contains(&n), "doctor misses {n}: {names:?}");
    }
    let wt = out.iter().find(|r| r["name"] == "worktree").unwrap();
    assert_eq!(wt["availability"]["available"], true, "{wt}");
    for r in &out {
        assert!(
            !r["availability"]["reason"].as_str().unwrap().is_empty(),
            "every runtime says why: {r}"
        );
    }
    let human = d.ok(&["doctor"]);
    assert!(human.contains("worktree"));
}
