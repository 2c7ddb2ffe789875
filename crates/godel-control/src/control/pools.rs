//! Warm pools (`[[pool]]` in the config): runtimes spawned ahead of demand
//! and held by the internal team `godel-pool` (which has no quota), so they
//! count against a team's quota only once claimed. A spawn whose request
//! matches a pool (same runtime and repo/ref or template, nothing else
//! customised) claims one in the time of a database update; the pool refills
//! in the background.

use std::sync::Arc;

use futures::FutureExt;
use godel_core::{Error, Event, Result, SandboxInfo, SpawnSpec};
use godel_policy::WarmPools;
use godel_policy::pool::{CreateFn, DestroyFn, PoolKey, pool_key};
use serde_json::json;

use super::lifecycle::reservation;
use super::{Caller, Control};
use crate::store::Quota;

/// The internal team that owns warm runtimes until they are claimed.
pub const POOL_TEAM: &str = "godel-pool";

impl Control {
    /// Build the pools from the config and start filling them.
    pub fn start_pools(self: &Arc<Self>) -> Result<()> {
        if self.policy.config.pools.is_empty() {
            return Ok(());
        }
        let weak = Arc::downgrade(self);
        let create: CreateFn = Arc::new(move |key: PoolKey| {
            let weak = weak.clone();
            async move {
                let c = weak
                    .upgrade()
                    .ok_or_else(|| Error::unavailable("daemon stopping"))?;
                c.spawn_warm(&key).await
            }
            .boxed()
        });
        let weak = Arc::downgrade(self);
        let destroy: DestroyFn = Arc::new(move |id: String| {
            let weak = weak.clone();
            async move {
                let c = weak
                    .upgrade()
                    .ok_or_else(|| Error::unavailable("daemon stopping"))?;
                c.terminate(&Caller::Admin, &id).await.map(|_| ())
            }
            .boxed()
        });
        let pools = WarmPools::from_config(&self.policy.config.pools, create, destroy)?;
        pools.start();
        let _ = self.pools.set(pools);
        Ok(())
    }

    /// Warm sandboxes of the last run are not tracked by the new pools:
    /// terminate them (called once at start, before [`Control::start_pools`]).
    pub async fn release_stale_pool_sandboxes(&self) {
        let Ok(all) = self.store.list_sandboxes(Some(POOL_TEAM), false) else {
            return;
        };
        for r in all.into_iter().filter(|r| self.owns(r)) {
            let _ = self.terminate(&Caller::Admin, &r.id).await;
        }
    }

    /// Drain the pools (on shutdown).
    pub async fn stop_pools(&self) {
        if let Some(p) = self.pools.get() {
            p.shutdown().await;
        }
    }

    /// Let every runtime stop what it made for itself (its own warm jails or
    /// VMs, pre-started helpers); sandboxes keep running. The last step of a
    /// daemon's stop, once no request is served any more.
    pub async fn shutdown_runtimes(&self) {
        let providers: Vec<_> = self.providers.read().values().cloned().collect();
        for p in providers {
            p.shutdown().await;
        }
    }

    async fn spawn_warm(&self, key: &PoolKey) -> Result<String> {
        let mut spec = key.spec();
        spec.team = Some(POOL_TEAM.to_string());
        spec.labels.insert("godel.pool".into(), key.to_string());
        let info = self.spawn(&Caller::Admin, spec).await?;
        Ok(info.id)
    }

    /// Claim a warm runtime for this request, if a pool matches.
    pub(crate) async fn claim_warm(
        &self,
        request: &SpawnSpec,
        runtime: &str,
        spec: &SpawnSpec,
        quota: Quota,
    ) -> Result<Option<SandboxInfo>> {
        let Some(pools) = self.pools.get() else {
            return Ok(None);
        };
        let team = spec.team.clone().unwrap_or_default();
        if team == POOL_TEAM {
            return Ok(None);
        }
        let Some(key) = pool_key(request, runtime) else {
            return Ok(None);
        };
        let Some((_, id)) = pools.claim_for_team(&key, Some(&team)) else {
            return Ok(None);
        };
        let Some(warm) = self.store.get_sandbox(&id)? else {
            return Ok(None);
        };
        let mut claimed = spec.clone();
        claimed.runtime = Some(warm.runtime.clone());
        claimed.labels.insert("godel.pool".into(), key.to_string());
        match self
            .store
            .reassign_sandbox(&id, POOL_TEAM, &claimed, reservation(&claimed), quota)
        {
            Ok(info) => {
                self.emit(
                    Event::new(godel_core::EventKind::PoolClaimed)
                        .runtime(&id)
                        .team(&team)
                        .data(json!({"pool": key.to_string(), "runtime": info.runtime})),
                );
                Ok(Some(info))
            }
            Err(e) if e.code == godel_core::ErrorCode::NotFound => {
                // Gone between the pool's hand-out and the claim (released,
                // taken over): spawn cold instead.
                tracing::warn!(runtime = %id, "warm runtime vanished before its claim; spawning cold");
                Ok(None)
            }
            Err(e) => {
                // Over quota: release the warm runtime; the pool refills.
                let _ = self.terminate(&Caller::Admin, &id).await;
                Err(e)
            }
        }
    }
}
