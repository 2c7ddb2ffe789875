//! The fair spawn queue: spawns that do not fit a quota wait, FIFO within a
//! team and round robin across teams, each until its own deadline.
//!
//! The queue does not know the quotas. The daemon passes a `try_reserve`
//! closure to [`FairQueue::acquire`] that runs the store's atomic
//! check-and-reserve transaction and answers [`Admission::Granted`] or
//! [`Admission::Wait`] (with the quota that is full). When capacity is freed
//! the daemon calls [`FairQueue::notify_released`].
//!
//! How serving works (one "turn" at a time, so it is race-free):
//! 1. A spawn arriving at an empty queue tries at once; if it must wait (or
//!    others already wait) it joins the back of its team's FIFO.
//! 2. A release (or a new team joining) starts a *round*: the teams with
//!    waiters, in round-robin order. Each team's *head* waiter in turn gets the
//!    turn and runs its own `try_reserve`; only the head of a team ever tries,
//!    so a team's spawns are served in arrival order.
//! 3. A team whose head was admitted moves to the back of the round-robin
//!    order. A round that admitted anyone is followed by another round (more
//!    capacity may be left); a round that admitted nobody ends serving until
//!    the next release. A release during a round restarts it from the front
//!    of the order (the team served least recently), so freed capacity goes
//!    to that team first. A turn granted before a release is handed back
//!    unused, so only a `try_reserve` already running when capacity is freed
//!    can get ahead of the front team.
//! 4. A waiter whose deadline passes (or whose future is dropped) leaves the
//!    queue, passing the turn on if it held it; its error is
//!    `RESOURCE_EXHAUSTED` naming the full quota.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use godel_core::{Error, Result};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a reservation attempt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Reserved: the spawn may proceed (and must release on failure).
    Granted,
    /// Not now; the string names the full quota (`"team alpha: memory 16Gi of 16Gi in use"`).
    Wait(String),
}

struct Waiter {
    id: u64,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct State {
    teams: HashMap<String, VecDeque<Waiter>>,
    /// Teams with waiters, in round-robin order.
    order: VecDeque<String>,
    /// Teams still to visit in the current round.
    round: VecDeque<String>,
    round_active: bool,
    round_admitted: bool,
    /// Capacity may have changed: run (another) round.
    kick: bool,
    /// The waiter that holds the turn.
    turn: Option<u64>,
    /// Bumped by every release.
    epoch: u64,
    next_id: u64,
    waiting: usize,
}

impl State {
    /// Hand the turn to the next team head, running rounds as needed.
    fn advance(&mut self) {
        loop {
            if self.turn.is_some() {
                return;
            }
            if self.round_active && self.kick {
                // Capacity changed mid-round: start over from the team that
                // has waited longest, so freed capacity goes to it first.
                self.round_active = false;
            }
            if self.round_active {
                if let Some(team) = self.round.pop_front() {
                    if let Some(w) = self.teams.get(&team).and_then(|q| q.front()) {
                        self.turn = Some(w.id);
                        w.notify.notify_one();
                        return;
                    }
                    continue;
                }
                self.round_active = false;
                if self.round_admitted {
                    self.kick = true;
                }
            }
            if !self.kick || self.order.is_empty() {
                self.kick = false;
                return;
            }
            self.kick = false;
            self.round_admitted = false;
            self.round = self.order.clone();
            self.round_active = true;
        }
    }

    fn remove(&mut self, team: &str, id: u64) -> bool {
        let Some(q) = self.teams.get_mut(team) else {
            return false;
        };
        let Some(pos) = q.iter().position(|w| w.id == id) else {
            return false;
        };
        q.remove(pos);
        self.waiting -= 1;
        if q.is_empty() {
            self.teams.remove(team);
            self.order.retain(|t| t != team);
        }
        if self.turn == Some(id) {
            self.turn = None;
        }
        true
    }
}

/// The queue. Cheap to clone; all clones share one queue.
#[derive(Clone)]
pub struct FairQueue {
    state: Arc<Mutex<State>>,
    max_waiters: usize,
}

impl Default for FairQueue {
    fn default() -> Self {
        FairQueue::new(10_000)
    }
}

impl std::fmt::Debug for FairQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairQueue")
            .field("waiting", &self.len())
            .finish()
    }
}

/// Removes a waiter that leaves without being served (deadline, drop, panic).
struct Guard<'a> {
    queue: &'a FairQueue,
    team: &'a str,
    id: u64,
    active: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.active {
            let mut st = self.queue.state.lock();
            st.remove(self.team, self.id);
            st.advance();
        }
    }
}

impl FairQueue {
    /// A queue holding at most `max_waiters` waiting spawns per team.
    pub fn new(max_waiters: usize) -> Self {
        FairQueue {
            state: Arc::new(Mutex::new(State::default())),
            max_waiters,
        }
    }

    /// Capacity was freed (a runtime ended, a quota was raised): serve waiters.
    pub fn notify_released(&self) {
        let mut st = self.state.lock();
        st.epoch += 1;
        st.kick = true;
        st.advance();
    }

    /// Waiting spawns of `team`.
    pub fn depth(&self, team: &str) -> usize {
        self.state.lock().teams.get(team).map_or(0, VecDeque::len)
    }

    /// Waiting spawns per team (teams with none are absent).
    pub fn depths(&self) -> HashMap<String, usize> {
        self.state
            .lock()
            .teams
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    /// All waiting spawns.
    pub fn len(&self) -> usize {
        self.state.lock().waiting
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserve capacity for one spawn of `team`, waiting in the fair queue
    /// until `deadline` if `try_reserve` says [`Admission::Wait`]. An error
    /// from `try_reserve` is returned as is (the waiter leaves the queue).
    pub async fn acquire(
        &self,
        team: &str,
        mut try_reserve: impl FnMut() -> Result<Admission>,
        deadline: Instant,
    ) -> Result<()> {
        self.acquire_async(team, || std::future::ready(try_reserve()), deadline)
            .await
    }

    /// [`FairQueue::acquire`] with an async `try_reserve` (a store reached
    /// through `spawn_blocking` or an async driver). The turn is held while
    /// it runs, so keep it short.
    pub async fn acquire_async<F, Fut>(
        &self,
        team: &str,
        mut try_reserve: F,
        deadline: Instant,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Admission>>,
    {
        let started = Instant::now();
        // An empty queue: try at once.
        let fast = {
            let st = self.state.lock();
            (st.waiting == 0).then_some(st.epoch)
        };
        let mut reason = None;
        if fast.is_some() {
            match try_reserve().await? {
                Admission::Granted => return Ok(()),
                Admission::Wait(r) => reason = Some(r),
            }
        }
        let (id, notify, mut reason) = {
            let mut st = self.state.lock();
            if let Some(epoch) = fast
                && st.epoch != epoch
            {
                // A release slipped in between: make sure someone looks.
                st.kick = true;
            }
            let q_len = st.teams.get(team).map_or(0, VecDeque::len);
            if q_len >= self.max_waiters {
                return Err(Error::exhausted(format!(
                    "team {team}: the spawn queue is full ({q_len} waiting)"
                )));
            }
            let id = st.next_id;
            st.next_id += 1;
            let notify = Arc::new(Notify::new());
            st.teams
                .entry(team.to_string())
                .or_default()
                .push_back(Waiter {
                    id,
                    notify: notify.clone(),
                });
            st.waiting += 1;
            if q_len == 0 {
                st.order.push_back(team.to_string());
                // A new team may fit its own quota even if others do not.
                st.kick = true;
            }
            st.advance();
            let reason = reason
                .unwrap_or_else(|| format!("waiting behind {} earlier spawns", st.waiting - 1));
            (id, notify, reason)
        };
        let mut guard = Guard {
            queue: self,
            team,
            id,
            active: true,
        };
        loop {
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    // The guard removes us and passes the turn on.
                    drop(guard);
                    return Err(Error::exhausted(format!(
                        "team {team}: {reason}; gave up after waiting {:.1} s in the spawn queue",
                        started.elapsed().as_secs_f64()
                    )));
                }
            }
            {
                let mut st = self.state.lock();
                if st.turn != Some(id) {
                    continue;
                }
                if st.kick {
                    // Capacity changed since this round began: the round
                    // starts over from the front before anyone tries.
                    st.turn = None;
                    st.advance();
                    continue;
                }
            }
            let outcome = try_reserve().await;
            let mut st = self.state.lock();
            match outcome {
                Ok(Admission::Granted) => {
                    guard.active = false;
                    st.remove(team, id);
                    if let Some(pos) = st.order.iter().position(|t| t == team)
                        && let Some(t) = st.order.remove(pos)
                    {
                        st.order.push_back(t);
                    }
                    st.round_admitted = true;
                    st.advance();
                    return Ok(());
                }
                Ok(Admission::Wait(r)) => {
                    reason = r;
                    st.turn = None;
                    st.advance();
                }
                Err(e) => {
                    guard.active = false;
                    st.remove(team, id);
                    st.advance();
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn free_capacity_is_granted_at_once() {
        let q = FairQueue::default();
        q.acquire("a", || Ok(Admission::Granted), far())
            .await
            .unwrap();
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_names_the_quota() {
        let q = FairQueue::default();
        let start = Instant::now();
        let e = q
            .acquire(
                "alpha",
                || Ok(Admission::Wait("memory 16Gi of 16Gi in use".into())),
                start + Duration::from_secs(30),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::ResourceExhausted);
        assert!(
            e.message.starts_with(
                "team alpha: memory 16Gi of 16Gi in use; gave up after waiting 30.0 s"
            ),
            "{}",
            e.message
        );
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_team_within_its_quota_does_not_wait_for_others() {
        let q = FairQueue::default();
        let q2 = q.clone();
        let blocked = tokio::spawn(async move {
            q2.acquire(
                "alpha",
                || Ok(Admission::Wait("alpha: max_agents".into())),
                far(),
            )
            .await
        });
        while q.depth("alpha") == 0 {
            tokio::task::yield_now().await;
        }
        // beta fits its own quota: admitted without any release.
        q.acquire("beta", || Ok(Admission::Granted), far())
            .await
            .unwrap();
        assert_eq!(q.depth("alpha"), 1);
        blocked.abort();
        let _ = blocked.await;
        assert!(q.is_empty(), "an aborted waiter leaves the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn async_reservations_hold_the_turn() {
        let q = FairQueue::default();
        let free = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for team in ["a", "b"] {
            let (q2, f2) = (q.clone(), free.clone());
            tasks.push(tokio::spawn(async move {
                q2.acquire_async(
                    team,
                    || {
                        let f3 = f2.clone();
                        async move {
                            // A slow store call: the turn is held meanwhile.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            let ok = f3
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                            Ok(if ok {
                                Admission::Granted
                            } else {
                                Admission::Wait("full".into())
                            })
                        }
                    },
                    far(),
                )
                .await
            }));
            // Sleep (not yield) so paused time can reach the store's 10 ms.
            while q.depth(team) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        free.store(1, Ordering::SeqCst);
        q.notify_released();
        tasks.remove(0).await.unwrap().unwrap();
        assert_eq!(q.depth("b"), 1);
        free.store(1, Ordering::SeqCst);
        q.notify_released();
        tasks.remove(0).await.unwrap().unwrap();
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn try_reserve_errors_are_returned() {
        let q = FairQueue::default();
        let cap = Arc::new(AtomicUsize::new(0));
        let c2 = cap.clone();
        let q2 = q.clone();
        let t = tokio::spawn(async move {
            q2.acquire(
                "a",
                move || {
                    if c2.load(Ordering::SeqCst) > 0 {
                        Err(Error::internal("store is gone"))
                    } else {
                        Ok(Admission::Wait("full".into()))
                    }
                },
                far(),
            )
            .await
        });
        while q.depth("a") == 0 {
            tokio::task::yield_now().await;
        }
        cap.store(1, Ordering::SeqCst);
        q.notify_released();
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.message, "store is gone");
        assert!(q.is_empty());
    }
}
