//! The quota arithmetic of one team: does a spawn of these resources fit,
//! and if not, which quota is full (in words for the queue's error).
//!
//! Pure functions for the store's check-and-reserve transaction: it sums the
//! team's live reservations into a [`QuotaUsage`], calls [`admit`] with the
//! team's [`QuotaConfig`] and the spawn's (already limit-filled) resources,
//! and inserts the `pending` record only on [`Admission::Granted`]. The
//! answer plugs straight into [`crate::FairQueue::acquire`].

use godel_core::{ByteQuantity, Cpu, ResourceLimits};
use serde::{Deserialize, Serialize};

use crate::config::QuotaConfig;
use crate::fair_queue::Admission;

/// What a team's live runtimes hold (or one spawn asks for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    pub agents: u32,
    pub cpu: Cpu,
    pub memory: ByteQuantity,
    pub disk: ByteQuantity,
}

impl QuotaUsage {
    /// What one runtime with these limits counts for (unset limits count as 0).
    pub fn of(limits: &ResourceLimits) -> QuotaUsage {
        QuotaUsage {
            agents: 1,
            cpu: limits.cpu.unwrap_or_default(),
            memory: limits.memory.unwrap_or_default(),
            disk: limits.disk.unwrap_or_default(),
        }
    }

    /// The sum of two usages (saturating).
    pub fn plus(self, o: QuotaUsage) -> QuotaUsage {
        QuotaUsage {
            agents: self.agents.saturating_add(o.agents),
            cpu: Cpu(self.cpu.0.saturating_add(o.cpu.0)),
            memory: ByteQuantity(self.memory.0.saturating_add(o.memory.0)),
            disk: ByteQuantity(self.disk.0.saturating_add(o.disk.0)),
        }
    }

    /// `(resource, used, limit)` rows for the `godel_quota_used`/`godel_quota_limit`
    /// gauges (cpu in cores, memory and disk in bytes).
    pub fn gauges(&self, quota: &QuotaConfig) -> [(&'static str, f64, Option<f64>); 4] {
        [
            (
                "agents",
                f64::from(self.agents),
                quota.max_agents.map(f64::from),
            ),
            ("cpu", self.cpu.cores(), quota.cpu.map(Cpu::cores)),
            (
                "memory",
                self.memory.0 as f64,
                quota.memory.map(|b| b.0 as f64),
            ),
            ("disk", self.disk.0 as f64, quota.disk.map(|b| b.0 as f64)),
        ]
    }
}

/// Whether `request` fits `quota` on top of `used`; the `Wait` reason names
/// the first quota that is full, e.g.
/// `memory quota 16Gi, 14Gi in use, this spawn needs 4Gi` (the fair queue
/// prefixes it with the team).
pub fn admit(quota: &QuotaConfig, used: QuotaUsage, request: QuotaUsage) -> Admission {
    if let Some(max) = quota.max_agents
        && used.agents.saturating_add(request.agents) > max
    {
        return Admission::Wait(format!("max_agents quota {max}, {} running", used.agents));
    }
    if let Some(q) = quota.cpu
        && used.cpu.0.saturating_add(request.cpu.0) > q.0
    {
        return Admission::Wait(format!(
            "cpu quota {q}, {} in use, this spawn needs {}",
            used.cpu, request.cpu
        ));
    }
    if let Some(q) = quota.memory
        && used.memory.0.saturating_add(request.memory.0) > q.0
    {
        return Admission::Wait(format!(
            "memory quota {q}, {} in use, this spawn needs {}",
            used.memory, request.memory
        ));
    }
    if let Some(q) = quota.disk
        && used.disk.0.saturating_add(request.disk.0) > q.0
    {
        return Admission::Wait(format!(
            "disk quota {q}, {} in use, this spawn needs {}",
            used.disk, request.disk
        ));
    }
    Admission::Granted
}

/// Whether a spawn can *never* fit (it asks for more than the whole quota):
/// such a request should fail at once with `RESOURCE_EXHAUSTED` instead of
/// waiting in the queue.
pub fn never_fits(team: &str, quota: &QuotaConfig, request: QuotaUsage) -> Option<String> {
    match admit(quota, QuotaUsage::default(), request) {
        Admission::Granted => None,
        Admission::Wait(why) => Some(format!(
            "team {team}: {why}: this spawn can never fit the team's quota"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> QuotaConfig {
        QuotaConfig {
            max_agents: Some(3),
            cpu: Some(Cpu(4000)),
            memory: Some(ByteQuantity(16 << 30)),
            disk: None,
        }
    }

    fn req(mem_gi: u64) -> QuotaUsage {
        QuotaUsage::of(&ResourceLimits {
            cpu: Some(Cpu(1000)),
            memory: Some(ByteQuantity(mem_gi << 30)),
            disk: Some(ByteQuantity(1 << 40)),
            pids: None,
        })
    }

    #[test]
    fn admits_until_a_quota_is_full_and_names_it() {
        let q = quota();
        let mut used = QuotaUsage::default();
        for _ in 0..3 {
            assert_eq!(admit(&q, used, req(4)), Admission::Granted);
            used = used.plus(req(4));
        }
        assert_eq!(
            admit(&q, used, req(4)),
            Admission::Wait("max_agents quota 3, 3 running".into())
        );
        let used = req(14);
        assert_eq!(
            admit(&q, used, req(4)),
            Admission::Wait("memory quota 16Gi, 14Gi in use, this spawn needs 4Gi".into())
        );
        let why = never_fits("alpha", &q, req(17)).unwrap();
        assert!(
            why.starts_with("team alpha: memory quota 16Gi, 0 in use, this spawn needs 17Gi"),
            "{why}"
        );
        assert!(never_fits("alpha", &q, req(16)).is_none());
        assert!(never_fits("alpha", &QuotaConfig::default(), req(1000)).is_none());
    }

    #[test]
    fn gauges_rows() {
        let rows = req(2).gauges(&quota());
        assert_eq!(rows[0], ("agents", 1.0, Some(3.0)));
        assert_eq!(rows[1], ("cpu", 1.0, Some(4.0)));
        assert_eq!(rows[3].2, None);
    }
}
