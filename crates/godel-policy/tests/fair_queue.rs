//! The fair queue under load: 200 waiters from 4 teams, served round robin
//! across teams and FIFO within each, with releases one at a time, all at
//! once, and racing from many threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use godel_core::ErrorCode;
use godel_policy::{Admission, FairQueue};
use tokio::time::Instant;

const TEAMS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

/// A shared capacity counter with an atomic check-and-reserve, as the store does.
#[derive(Clone, Default)]
struct Capacity {
    free: Arc<AtomicI64>,
    served: Arc<Mutex<Vec<(String, usize)>>>,
}

impl Capacity {
    fn try_reserve(&self, team: &str, seq: usize) -> godel_core::Result<Admission> {
        let mut cur = self.free.load(Ordering::SeqCst);
        loop {
            if cur <= 0 {
                return Ok(Admission::Wait("global capacity 0 free".into()));
            }
            match self
                .free
                .compare_exchange(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.served.lock().push((team.to_string(), seq));
                    return Ok(Admission::Granted);
                }
                Err(now) => cur = now,
            }
        }
    }
    fn release(&self, n: i64, q: &FairQueue) {
        self.free.fetch_add(n, Ordering::SeqCst);
        q.notify_released();
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// Enqueue 50 waiters per team, a whole team at a time (so arrival order alone
/// would serve alpha's 50 first), each waiting until it is in the queue.
async fn enqueue_200(q: &FairQueue, cap: &Capacity) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for team in TEAMS {
        for seq in 0..50 {
            let (q2, c2) = (q.clone(), cap.clone());
            let before = q.len();
            handles.push(tokio::spawn(async move {
                q2.acquire(team, || c2.try_reserve(team, seq), far())
                    .await
                    .unwrap();
            }));
            while q.len() == before {
                tokio::task::yield_now().await;
            }
        }
    }
    assert_eq!(q.len(), 200);
    assert_eq!(q.depth("gamma"), 50);
    handles
}

fn assert_round_robin_and_fifo(served: &[(String, usize)]) {
    assert_eq!(served.len(), 200);
    for (i, (team, seq)) in served.iter().enumerate() {
        assert_eq!(team, TEAMS[i % 4], "position {i}: {served:?}");
        assert_eq!(*seq, i / 4, "FIFO within {team} at position {i}");
    }
}

#[tokio::test]
async fn releases_one_at_a_time_alternate_between_teams() {
    let q = FairQueue::default();
    let cap = Capacity::default();
    let handles = enqueue_200(&q, &cap).await;
    for k in 1..=200 {
        cap.release(1, &q);
        while cap.served.lock().len() < k {
            tokio::task::yield_now().await;
        }
        // Exactly one admitted per released unit.
        assert_eq!(cap.served.lock().len(), k);
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_round_robin_and_fifo(&cap.served.lock());
    assert!(q.is_empty());
    assert_eq!(cap.free.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_release_on_many_threads_keeps_the_order() {
    let q = FairQueue::default();
    let cap = Capacity::default();
    let handles = enqueue_200(&q, &cap).await;
    // All capacity at once: served strictly round robin, even on 4 threads.
    cap.release(200, &q);
    for h in handles {
        tokio::time::timeout(Duration::from_secs(20), h)
            .await
            .expect("every waiter is served")
            .unwrap();
    }
    assert_round_robin_and_fifo(&cap.served.lock());
    assert_eq!(cap.free.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_releases_stay_fair_and_fifo() {
    let q = FairQueue::default();
    let cap = Capacity::default();
    let handles = enqueue_200(&q, &cap).await;
    // Release from several tasks at once, one unit at a time, in uneven batches.
    let releasers: Vec<_> = [70, 50, 50, 30]
        .into_iter()
        .map(|n| {
            let (q2, c2) = (q.clone(), cap.clone());
            tokio::spawn(async move {
                for _ in 0..n {
                    c2.release(1, &q2);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for r in releasers {
        r.await.unwrap();
    }
    for h in handles {
        tokio::time::timeout(Duration::from_secs(20), h)
            .await
            .expect("every waiter is served")
            .unwrap();
    }
    let served = cap.served.lock().clone();
    assert_eq!(served.len(), 200);
    assert_eq!(cap.free.load(Ordering::SeqCst), 0, "never over-admitted");
    // FIFO within each team, strictly.
    for team in TEAMS {
        let seqs: Vec<usize> = served
            .iter()
            .filter(|(t, _)| t == team)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(seqs, (0..50).collect::<Vec<_>>(), "{team}");
    }
    // Round robin: a release racing a running `try_reserve` may let that team
    // ahead, but no team ever gets far ahead of another.
    let mut counts = [0i64; 4];
    for (i, (team, _)) in served.iter().enumerate() {
        let t = TEAMS.iter().position(|x| x == team).unwrap();
        counts[t] += 1;
        let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
        assert!(spread <= 4, "spread {spread} at position {i}: {served:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_with_deadlines_and_cancellations_never_over_admits() {
    let q = FairQueue::default();
    let in_use = Arc::new(AtomicI64::new(0));
    let limit = 5;
    let admitted = Arc::new(AtomicUsize::new(0));
    let timed_out = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..400usize {
        let team = TEAMS[i % 4];
        let (q2, used, adm, tmo) = (
            q.clone(),
            in_use.clone(),
            admitted.clone(),
            timed_out.clone(),
        );
        handles.push(tokio::spawn(async move {
            let deadline =
                Instant::now() + Duration::from_millis(if i % 7 == 0 { 5 } else { 5000 });
            let res = q2
                .acquire(
                    team,
                    || {
                        // Check-and-reserve, as one atomic step.
                        let mut cur = used.load(Ordering::SeqCst);
                        loop {
                            if cur >= limit {
                                return Ok(Admission::Wait(format!("{cur} of {limit} agents")));
                            }
                            match used.compare_exchange(
                                cur,
                                cur + 1,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            ) {
                                Ok(_) => return Ok(Admission::Granted),
                                Err(now) => cur = now,
                            }
                        }
                    },
                    deadline,
                )
                .await;
            match res {
                Ok(()) => {
                    adm.fetch_add(1, Ordering::SeqCst);
                    assert!(used.load(Ordering::SeqCst) <= limit);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    used.fetch_sub(1, Ordering::SeqCst);
                    q2.notify_released();
                }
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::ResourceExhausted);
                    assert!(
                        e.message.contains("of 5 agents") || e.message.contains("waiting behind"),
                        "{}",
                        e.message
                    );
                    tmo.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
        if i % 50 == 0 {
            // Some spawns are abandoned by their callers.
            let (q3, t) = (q.clone(), TEAMS[(i / 50) % 4]);
            let h = tokio::spawn(async move {
                let _ = q3
                    .acquire(t, || Ok(Admission::Wait("never".into())), far())
                    .await;
            });
            tokio::task::yield_now().await;
            h.abort();
        }
    }
    for h in handles {
        tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .expect("no waiter is stuck")
            .unwrap();
    }
    assert_eq!(
        admitted.load(Ordering::SeqCst) + timed_out.load(Ordering::SeqCst),
        400
    );
    assert!(
        admitted.load(Ordering::SeqCst) >= 300,
        "most spawns got through"
    );
    assert_eq!(in_use.load(Ordering::SeqCst), 0);
    assert!(q.is_empty(), "queue left with {} waiters", q.len());
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_head_passes_the_turn_on() {
    let q = FairQueue::default();
    let cap = Capacity::default();
    let start = Instant::now();
    let (q1, c1) = (q.clone(), cap.clone());
    let first = tokio::spawn(async move {
        q1.acquire(
            "alpha",
            || c1.try_reserve("alpha", 0),
            start + Duration::from_secs(10),
        )
        .await
    });
    while q.is_empty() {
        tokio::task::yield_now().await;
    }
    let (q2, c2) = (q.clone(), cap.clone());
    let second = tokio::spawn(async move {
        q2.acquire(
            "alpha",
            || c2.try_reserve("alpha", 1),
            start + Duration::from_secs(100),
        )
        .await
    });
    while q.len() < 2 {
        tokio::task::yield_now().await;
    }
    let e = first.await.unwrap().unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(
        e.message.contains("global capacity 0 free"),
        "{}",
        e.message
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(q.depth("alpha"), 1);
    cap.release(1, &q);
    second.await.unwrap().unwrap();
    assert_eq!(*cap.served.lock(), [("alpha".to_string(), 1)]);
}
