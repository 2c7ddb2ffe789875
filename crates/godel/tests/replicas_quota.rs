//! A team's quota holds exactly across three replicas sharing one PostgreSQL
//! store: 200 concurrent spawns of team `alpha` (quota 25 agents, a warm
//! pool of kata sandboxes of its own on every replica), spread over the
//! three replicas, end in exactly 25 sandboxes and 175 RESOURCE_EXHAUSTED
//! refusals, nothing else. The store is checked throughout (a separate
//! connection counts the team's live records every 10 ms) and afterwards by
//! replaying every admission and release in commit order; no warm sandbox
//! is handed out twice; removing the sandboxes brings the team back to 0.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Daemon, stderr, stdout};
use godel_control::POOL_TEAM;
use godel_fake_kube::{FakeApiServer, FakeOptions};
use godel_testkit::{Need, require};
use serde_json::Value;

const TEAM: &str = "alpha";
/// The team's `max_agents`.
const QUOTA: usize = 25;
/// Spawns fired at once, round robin over the replicas.
const SPAWNS: usize = 200;
/// Warm kata sandboxes of the team's pool, per replica.
const POOL_SIZE: usize = 5;

/// The team's live records, as the store's quota check counts them.
const LIVE: &str =
    "SELECT COUNT(*) FROM runtimes WHERE team = $1 AND state NOT IN ('terminated', 'error')";

/// The same configuration for every replica: the quota, no waiting in the
/// fair queue (a spawn over quota fails at once), the team's warm pool.
///
/// Small per-agent limits keep the kata runtime's own namespace quotas out
/// of the way: a team's namespace gets its `max_agents` as `pods` but the
/// cluster default of 10 CPUs unless the team's quota sets `cpu`, and the
/// pool team's namespace (all warm kata sandboxes of every replica, claimed
/// ones included) has the default 10 CPUs. With the default 2 CPUs per
/// agent, the cluster would refuse the sixth pod of either namespace.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("godel.toml");
    std::fs::write(
        &path,
        format!(
            "[defaults.limits]\ncpu = \"100m\"\nmemory = \"128Mi\"\n\n\
             [teams.{TEAM}]\nqueue_timeout_secs = 0\n\n\
             [teams.{TEAM}.quota]\nmax_agents = {QUOTA}\n\n\
             [[pool]]\nruntime = \"kata\"\ntemplate = \"base\"\nsize = {POOL_SIZE}\nteam = \"{TEAM}\"\n"
        ),
    )
    .unwrap();
    path
}

fn replica(id: &str, db: &str, kubeconfig: &str, config: &str) -> Daemon {
    Daemon::start_tcp_env(
        &["--database", db, "--replica-id", id, "--config", config],
        &[("KUBECONFIG", kubeconfig)],
    )
}

/// `GET path` on a replica's native TCP API: the JSON body.
fn get_json(d: &Daemon, token: &str, path: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.tcp.as_deref().unwrap()).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {text}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// A connection of the test's own to the replicas' schema.
async fn connect(base: &str, schema: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .unwrap();
    client
}

async fn live(pg: &tokio_postgres::Client) -> usize {
    let n: i64 = pg.query_one(LIVE, &[&TEAM]).await.unwrap().get(0);
    n as usize
}

/// A journal of every change to a runtime record, written by a trigger in
/// the transaction that makes the change. Every write transaction of the
/// store first takes the one advisory write lock and holds it to its
/// commit, so the journal's sequence numbers are drawn in commit order: the
/// journal is the exact history of the records, admissions (a record
/// inserted, or reassigned from the pool team) and releases alike.
///
/// The warm pools started filling before the journal exists: it opens with
/// every record as it stands, in the transaction that creates the trigger.
/// `CREATE TRIGGER` locks out writers of the table until that transaction
/// commits, so each change is either in the opening rows or journaled after
/// them.
async fn install_journal(pg: &tokio_postgres::Client, schema: &str) {
    pg.batch_execute(&format!(
        r#"
        BEGIN;
        CREATE TABLE {schema}.quota_journal (
            seq BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL,
            team TEXT NOT NULL,
            state TEXT NOT NULL
        );
        CREATE FUNCTION {schema}.quota_journal_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                INSERT INTO {schema}.quota_journal (id, team, state) VALUES (OLD.id, OLD.team, 'deleted');
            ELSE
                INSERT INTO {schema}.quota_journal (id, team, state) VALUES (NEW.id, NEW.team, NEW.state);
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER quota_journal AFTER INSERT OR UPDATE OF team, state OR DELETE
            ON {schema}.runtimes FOR EACH ROW EXECUTE FUNCTION {schema}.quota_journal_row();
        INSERT INTO {schema}.quota_journal (id, team, state)
            SELECT id, team, state FROM {schema}.runtimes ORDER BY id;
        COMMIT;
        "#
    ))
    .await
    .unwrap();
}

/// What the journal says, replayed in commit order.
#[derive(Debug, Default)]
struct Replay {
    /// The team's live records after each change, at most.
    max_live: usize,
    /// The team's live records at the end.
    end_live: usize,
    /// Records that entered the team as a fresh `creating` insert.
    inserted: BTreeSet<String>,
    /// Records that entered the team from the pool team (warm claims), with
    /// how often each did.
    claimed: BTreeMap<String, usize>,
    /// Sandboxes the pool made (inserted as the pool team).
    warm: BTreeSet<String>,
    /// Warm sandboxes released unclaimed (a spawn over quota that took one
    /// from its replica's pool releases it).
    warm_released: usize,
}

fn replay_journal(rows: &[(String, String, String)]) -> Replay {
    let is_live = |state: &str| !matches!(state, "terminated" | "error" | "deleted");
    let mut cur: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut out = Replay::default();
    let mut live = 0usize;
    for (id, team, state) in rows {
        let was = cur.get(id.as_str()).copied();
        let was_ours = was.is_some_and(|(t, s)| t == TEAM && is_live(s));
        let now_ours = team == TEAM && is_live(state);
        match was {
            None if team == POOL_TEAM => {
                out.warm.insert(id.clone());
            }
            None if team == TEAM => {
                out.inserted.insert(id.clone());
            }
            Some((t, _)) if t == POOL_TEAM && team == TEAM => {
                *out.claimed.entry(id.clone()).or_default() += 1;
            }
            Some((t, s))
                if t == POOL_TEAM && team == POOL_TEAM && is_live(s) && !is_live(state) =>
            {
                out.warm_released += 1;
            }
            Some((t, _)) if t == TEAM && team != TEAM => {
                panic!("{id} left team {TEAM} for {team}: {rows:?}")
            }
            _ => {}
        }
        match (was_ours, now_ours) {
            (false, true) => live += 1,
            (true, false) => live -= 1,
            _ => {}
        }
        out.max_live = out.max_live.max(live);
        cur.insert(id, (team, state));
    }
    out.end_live = live;
    out
}

/// The team's admissions and releases as the event log reports them, in
/// `seq` order.
///
/// A cold spawn inserts its `creating` record (the quota check and the
/// insert in one transaction), then appends `state_changed {state:
/// creating}`; a warm claim moves the record from the pool team (check and
/// update in one transaction), then appends `pool_claimed`; a release moves
/// the record to `terminated` or `error`, then appends `state_changed` with
/// that state. Each event is its own write transaction after the change it
/// reports, so `seq` orders events exactly but places each one *after* its
/// change: the replay sees admissions late. While nothing of the team is
/// released (during the burst: a release there would be a failed spawn,
/// which the outcome check refuses), its count is therefore never above the
/// store's, and a count above the quota here means one in the store. The
/// exact interleaving is the journal's ([`replay_journal`]); this replay
/// checks that every admission the store made is reported, once, in the
/// log every replica shares.
struct EventReplay {
    max_live: usize,
    end_live: usize,
    admitted_cold: BTreeMap<String, usize>,
    claims: BTreeMap<String, usize>,
}

fn replay_events(events: &[(i64, String, String, Value)]) -> EventReplay {
    let mut live_ids = BTreeSet::new();
    let mut out = EventReplay {
        max_live: 0,
        end_live: 0,
        admitted_cold: BTreeMap::new(),
        claims: BTreeMap::new(),
    };
    for (_, kind, id, data) in events {
        match (kind.as_str(), data["state"].as_str()) {
            ("state_changed", Some("creating")) => {
                *out.admitted_cold.entry(id.clone()).or_default() += 1;
                live_ids.insert(id.clone());
            }
            ("pool_claimed", _) => {
                *out.claims.entry(id.clone()).or_default() += 1;
                live_ids.insert(id.clone());
            }
            ("state_changed", Some("terminated" | "error")) => {
                live_ids.remove(id);
            }
            _ => {}
        }
        out.max_live = out.max_live.max(live_ids.len());
    }
    out.end_live = live_ids.len();
    out
}

async fn journal(pg: &tokio_postgres::Client) -> Vec<(String, String, String)> {
    pg.query(
        "SELECT id, team, state FROM quota_journal ORDER BY seq",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn team_events(pg: &tokio_postgres::Client) -> Vec<(i64, String, String, Value)> {
    pg.query(
        "SELECT seq, kind, runtime_id, data FROM events
         WHERE team = $1 AND kind IN ('state_changed', 'pool_claimed') ORDER BY seq",
        &[&TEAM],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let data: String = r.get(3);
        (
            r.get(0),
            r.get(1),
            r.get::<_, Option<String>>(2).unwrap_or_default(),
            serde_json::from_str(&data).unwrap(),
        )
    })
    .collect()
}

/// Run the commands all at once (released together by a barrier).
fn run_all(cmds: Vec<Command>) -> Vec<Output> {
    let gate = Arc::new(Barrier::new(cmds.len()));
    let threads: Vec<_> = cmds
        .into_iter()
        .map(|mut c| {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.wait();
                c.output().unwrap()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spawns_over_three_replicas_admit_exactly_the_quota() {
    require!(Need::Postgres);
    let started = Instant::now();
    let base = godel_testkit::postgres_url().unwrap();
    let db = godel_testkit::postgres_schema_url(&base, "quota");
    let schema = db.rsplit_once("schema=").unwrap().1.to_string();
    let fake = FakeApiServer::start(FakeOptions::default()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kc = common::kubeconfig(tmp.path(), &fake.url());
    let kc = kc.to_str().unwrap();
    let cfg = config(tmp.path());
    let cfg = cfg.to_str().unwrap();

    let replicas = [
        replica("replica-a", &db, kc, cfg),
        replica("replica-b", &db, kc, cfg),
        replica("replica-c", &db, kc, cfg),
    ];
    let token = replicas[0].last_line(&["token", "create", "--team", TEAM]);
    let pg = connect(&base, &schema).await;
    install_journal(&pg, &schema).await;
    assert_eq!(live(&pg).await, 0, "schema {schema}: a fresh team");

    // Every replica's warm pool full before the burst.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fill: Vec<Value> = replicas
            .iter()
            .map(|d| get_json(d, &token, "/v1/overview")["pools"].clone())
            .collect();
        let full = fill.iter().all(|p| {
            p.as_array().is_some_and(|p| {
                p.len() == 1 && p[0]["runtime"] == "kata" && p[0]["ready"] == POOL_SIZE
            })
        });
        if full {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the warm pools did not fill: {fill:?}\n{}",
            replicas
                .iter()
                .map(Daemon::log)
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The store, counted from outside every 10 ms while the spawns run.
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let stop = stop.clone();
        let pg = connect(&base, &schema).await;
        tokio::spawn(async move {
            let (mut max, mut samples) = (0usize, 0usize);
            loop {
                let done = stop.load(Ordering::SeqCst);
                max = max.max(live(&pg).await);
                samples += 1;
                if done {
                    return (max, samples);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let cmds: Vec<Command> = (0..SPAWNS)
        .map(|i| {
            let mut c = replicas[i % replicas.len()].tcp_cmd(&token);
            c.args(["--json", "spawn", "--runtime", "kata", "--template", "base"]);
            c
        })
        .collect();
    let burst = Instant::now();
    let outputs = tokio::task::spawn_blocking(move || run_all(cmds))
        .await
        .unwrap();
    let burst = burst.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (monitor_max, samples) = monitor.await.unwrap();

    // Exactly the quota admitted, every other spawn refused as over quota.
    let mut spawned: Vec<Value> = Vec::new();
    let mut refused = 0;
    let mut other = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        if out.status.success() {
            spawned.push(serde_json::from_str(&stdout(out)).unwrap());
            continue;
        }
        // Refused by the store's quota check (the cluster's own namespace
        // quota answers RESOURCE_EXHAUSTED too, after an admission).
        let err: Option<Value> = serde_json::from_str(stderr(out).trim()).ok();
        let over_quota = format!("team {TEAM} quota exceeded for agents");
        if out.status.code() == Some(6)
            && err.as_ref().is_some_and(|e| {
                e["code"] == "RESOURCE_EXHAUSTED"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(&over_quota))
            })
        {
            refused += 1;
        } else {
            other.push(format!(
                "spawn {i} through replica {}: {}: {}",
                i % replicas.len(),
                out.status,
                stderr(out)
            ));
        }
    }
    let ids: BTreeSet<String> = spawned
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let warm_spawned: BTreeSet<String> = spawned
        .iter()
        .filter(|s| s["spec"]["labels"].get("godel.pool").is_some())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    eprintln!(
        "{SPAWNS} spawns over 3 replicas in {:.2} s: {} admitted ({} warm), {refused} refused, {} other; \
         live count polled {samples} times, at most {monitor_max}",
        burst.as_secs_f64(),
        spawned.len(),
        warm_spawned.len(),
        other.len()
    );
    assert!(other.is_empty(), "schema {schema}: {other:#?}");
    assert_eq!(spawned.len(), QUOTA, "schema {schema}: admitted");
    assert_eq!(refused, SPAWNS - QUOTA, "schema {schema}: refused");
    assert_eq!(
        ids.len(),
        QUOTA,
        "every admitted spawn a sandbox of its own"
    );
    for s in &spawned {
        assert_eq!(s["team"], TEAM, "{s}");
        assert_eq!(s["runtime"], "kata", "{s}");
        assert_eq!(s["state"], "running", "{s}");
    }
    assert!(
        !warm_spawned.is_empty(),
        "no spawn was served from the full warm pools"
    );
    // Never above the quota while the spawns ran, and at it after.
    assert!(samples > 1, "the store was polled {samples} times");
    assert!(
        monitor_max <= QUOTA,
        "schema {schema}: the store held {monitor_max} live sandboxes of {TEAM} (quota {QUOTA})"
    );
    assert_eq!(live(&pg).await, QUOTA);

    // The exact history: never above the quota after any commit.
    let rows = journal(&pg).await;
    let r = replay_journal(&rows);
    eprintln!(
        "journal: {} changes, {} inserted, {} claimed of {} warm sandboxes made ({} released unclaimed), at most {} live",
        rows.len(),
        r.inserted.len(),
        r.claimed.len(),
        r.warm.len(),
        r.warm_released,
        r.max_live
    );
    assert!(
        r.max_live <= QUOTA,
        "schema {schema}: {} live sandboxes of {TEAM} after one commit (quota {QUOTA})",
        r.max_live
    );
    assert_eq!(r.end_live, QUOTA);
    // No warm sandbox handed out twice: each moved from the pool once, and
    // each was one the pool made; the admitted are exactly the inserted and
    // the claimed, and the claimed are the spawns that say so.
    for (id, n) in &r.claimed {
        assert_eq!(*n, 1, "warm sandbox {id} claimed {n} times");
        assert!(r.warm.contains(id), "{id} claimed but not made by a pool");
    }
    let claimed: BTreeSet<String> = r.claimed.keys().cloned().collect();
    assert_eq!(claimed, warm_spawned, "warm claims vs spawns served warm");
    assert!(r.inserted.is_disjoint(&claimed));
    let admitted: BTreeSet<String> = r.inserted.union(&claimed).cloned().collect();
    assert_eq!(
        admitted, ids,
        "the store's admissions vs the admitted spawns"
    );

    // The event log every replica writes to tells the same story.
    let events = team_events(&pg).await;
    let e = replay_events(&events);
    assert!(e.max_live <= QUOTA, "events: {} live", e.max_live);
    assert_eq!(e.end_live, QUOTA);
    for (id, n) in e.admitted_cold.iter().chain(e.claims.iter()) {
        assert_eq!(*n, 1, "{id} admitted {n} times in the event log");
    }
    let cold: BTreeSet<String> = e.admitted_cold.keys().cloned().collect();
    let warm: BTreeSet<String> = e.claims.keys().cloned().collect();
    assert_eq!(cold, r.inserted, "creating events vs inserted records");
    assert_eq!(warm, claimed, "pool_claimed events vs claimed records");

    // One pod per admitted sandbox in the cluster.
    let pods = fake.names("pods", None);
    for id in &ids {
        let n = pods.iter().filter(|p| p.contains(id.as_str())).count();
        assert_eq!(n, 1, "pods of {id}: {pods:?}");
    }

    // Remove them all (through every replica): the team is back to 0.
    let cmds: Vec<Command> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut c = replicas[i % replicas.len()].tcp_cmd(&token);
            c.args(["rm", id]);
            c
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || run_all(cmds))
        .await
        .unwrap();
    for out in &outputs {
        assert!(out.status.success(), "rm: {}", stderr(out));
    }
    assert_eq!(live(&pg).await, 0, "schema {schema}: live after rm");
    let r = replay_journal(&journal(&pg).await);
    assert_eq!(r.end_live, 0);
    assert!(r.max_live <= QUOTA);
    let e = replay_events(&team_events(&pg).await);
    assert_eq!(e.end_live, 0, "every removal in the event log");
    let pods = fake.names("pods", None);
    for id in &ids {
        assert!(
            !pods.iter().any(|p| p.contains(id.as_str())),
            "{id} still has a pod: {pods:?}"
        );
    }

    // Stop the replicas (they remove the warm sandboxes), then drop the schema.
    tokio::task::spawn_blocking(move || drop(replicas))
        .await
        .unwrap();
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}
