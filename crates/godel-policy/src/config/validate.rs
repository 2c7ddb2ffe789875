//! Cross-field validation of the configuration: runtime names, chains,
//! per-agent limits within team quotas, pools, retry/circuit/health sanity.
//! Every error names the key it is about.

use std::net::SocketAddr;

use godel_core::{Error, Result, validate_name};

use super::{Config, KNOWN_RUNTIMES, LimitsConfig};

/// The runtime names accepted in this build.
pub fn known_runtimes() -> Vec<&'static str> {
    KNOWN_RUNTIMES.to_vec()
}

fn check_runtime(key: &str, name: &str, known: &[&str]) -> Result<()> {
    if known.contains(&name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{key}: unknown runtime {name:?} (known: {})",
            known.join(", ")
        )))
    }
}

fn check_chain(key: &str, chain: &[String], known: &[&str]) -> Result<()> {
    for (i, r) in chain.iter().enumerate() {
        check_runtime(&format!("{key}[{i}]"), r, known)?;
        if chain[..i].contains(r) {
            return Err(Error::invalid(format!(
                "{key}[{i}]: runtime {r:?} appears twice"
            )));
        }
    }
    Ok(())
}

fn check_positive(key: &str, v: u64) -> Result<()> {
    if v == 0 {
        Err(Error::invalid(format!("{key}: must be above zero")))
    } else {
        Ok(())
    }
}

fn check_addr(key: &str, v: &Option<String>) -> Result<()> {
    if let Some(a) = v {
        a.parse::<SocketAddr>().map_err(|_| {
            Error::invalid(format!(
                "{key}: {a:?} is not an address like \"127.0.0.1:7070\""
            ))
        })?;
    }
    Ok(())
}

fn check_limits(key: &str, l: &LimitsConfig) -> Result<()> {
    if l.pids == Some(0) {
        return Err(Error::invalid(format!("{key}.pids: must be above zero")));
    }
    if l.max_exec_timeout_secs == Some(0) {
        return Err(Error::invalid(format!(
            "{key}.max_exec_timeout_secs: must be above zero"
        )));
    }
    Ok(())
}

impl Config {
    /// Cross-field validation with the runtimes of this build.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&known_runtimes())
    }

    /// Cross-field validation against an explicit set of runtime names (for
    /// daemons that register extra providers, e.g. several fault instances).
    pub fn validate_with(&self, known: &[&str]) -> Result<()> {
        check_addr("server.listen", &self.server.listen)?;
        check_addr("server.e2b_listen", &self.server.e2b_listen)?;
        super::billing::validate(&self.prices, &self.metering, &self.budgets, known)?;
        check_runtime("defaults.runtime", &self.defaults.runtime, known)?;
        check_chain("defaults.fallback", &self.defaults.fallback, known)?;
        check_limits("defaults.limits", &self.defaults.limits)?;
        for (name, t) in &self.teams {
            let key = format!("teams.{name}");
            validate_name("team", name)
                .map_err(|e| Error::invalid(format!("{key}: {}", e.message)))?;
            check_chain(
                &format!("{key}.allowed_runtimes"),
                &t.allowed_runtimes,
                known,
            )?;
            let allowed = |r: &str| {
                t.allowed_runtimes.is_empty() || t.allowed_runtimes.iter().any(|a| a == r)
            };
            if let Some(r) = &t.runtime {
                check_runtime(&format!("{key}.runtime"), r, known)?;
                if !allowed(r) {
                    return Err(Error::invalid(format!(
                        "{key}.runtime: {r:?} is not in {key}.allowed_runtimes"
                    )));
                }
            }
            if let Some(chain) = &t.fallback {
                check_chain(&format!("{key}.fallback"), chain, known)?;
                if let Some((i, r)) = chain.iter().enumerate().find(|(_, r)| !allowed(r)) {
                    return Err(Error::invalid(format!(
                        "{key}.fallback[{i}]: {r:?} is not in {key}.allowed_runtimes"
                    )));
                }
            }
            check_limits(&format!("{key}.limits"), &t.limits)?;
            let eff = t.limits.or(&self.defaults.limits);
            let q = &t.quota;
            if q.max_agents == Some(0) {
                return Err(Error::invalid(format!(
                    "{key}.quota.max_agents: must be above zero"
                )));
            }
            let over = |what: &str, lim: Option<String>, quota: Option<String>| -> Result<()> {
                Err(Error::invalid(format!(
                    "{key}.limits.{what}: per-agent limit {} is above the team quota {}",
                    lim.unwrap_or_default(),
                    quota.unwrap_or_default()
                )))
            };
            if let (Some(l), Some(qv)) = (eff.cpu, q.cpu)
                && l > qv
            {
                over("cpu", Some(l.to_string()), Some(qv.to_string()))?;
            }
            if let (Some(l), Some(qv)) = (eff.memory, q.memory)
                && l > qv
            {
                over("memory", Some(l.to_string()), Some(qv.to_string()))?;
            }
            if let (Some(l), Some(qv)) = (eff.disk, q.disk)
                && l > qv
            {
                over("disk", Some(l.to_string()), Some(qv.to_string()))?;
            }
        }
        for (i, p) in self.pools.iter().enumerate() {
            let key = format!("pool[{i}]");
            check_runtime(&format!("{key}.runtime"), &p.runtime, known)?;
            if p.repo.is_none() && p.template.is_none() {
                return Err(Error::invalid(format!(
                    "{key}: a pool needs a repo or a template"
                )));
            }
            // A built template pins its spawns to the worktree runtime
            // without the warm pool, and pools fill as no team: only
            // built-in names (or names an `e2b` runtime forwards) can pool.
            if let Some(t) = &p.template
                && p.runtime != "e2b"
                && !godel_core::BUILTIN_TEMPLATES.contains(&t.as_str())
            {
                return Err(Error::invalid(format!(
                    "{key}.template: {t:?} is not a built-in template ({}); warm pools of built templates are not supported (runtime e2b forwards any name)",
                    godel_core::BUILTIN_TEMPLATES.join(", ")
                )));
            }
            if p.size > 256 {
                return Err(Error::invalid(format!(
                    "{key}.size: {} is above the maximum of 256",
                    p.size
                )));
            }
            if let Some(t) = &p.team
                && !self.teams.contains_key(t)
            {
                return Err(Error::invalid(format!(
                    "{key}.team: no team {t:?} in [teams]"
                )));
            }
        }
        for (i, p) in self.pools.iter().enumerate() {
            if self.pools[..i].iter().any(|q| {
                q.runtime == p.runtime
                    && q.repo == p.repo
                    && q.git_ref == p.git_ref
                    && q.template == p.template
                    && q.team == p.team
            }) {
                return Err(Error::invalid(format!(
                    "pool[{i}]: duplicates an earlier pool with the same runtime, source and team"
                )));
            }
        }
        let r = &self.retry;
        check_positive("retry.max_attempts", r.max_attempts.into())?;
        if r.base_delay_ms > r.max_delay_ms {
            return Err(Error::invalid(format!(
                "retry.base_delay_ms: {} is above retry.max_delay_ms {}",
                r.base_delay_ms, r.max_delay_ms
            )));
        }
        check_positive(
            "circuit.failure_threshold",
            self.circuit.failure_threshold.into(),
        )?;
        check_positive("circuit.open_secs", self.circuit.open_secs)?;
        check_positive(
            "circuit.half_open_calls",
            self.circuit.half_open_calls.into(),
        )?;
        let h = &self.health;
        check_positive("health.interval_secs", h.interval_secs)?;
        check_positive("health.probe_timeout_secs", h.probe_timeout_secs)?;
        check_positive("health.unhealthy_after", h.unhealthy_after.into())?;
        if h.dead_after < h.unhealthy_after {
            return Err(Error::invalid(format!(
                "health.dead_after: {} is below health.unhealthy_after {}",
                h.dead_after, h.unhealthy_after
            )));
        }
        if h.probe.is_empty() || h.probe[0].is_empty() {
            return Err(Error::invalid("health.probe: needs a command"));
        }
        if h.backoff_secs > h.max_backoff_secs {
            return Err(Error::invalid(format!(
                "health.backoff_secs: {} is above health.max_backoff_secs {}",
                h.backoff_secs, h.max_backoff_secs
            )));
        }
        Ok(())
    }
}
