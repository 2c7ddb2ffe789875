//! Prometheus text for `/metrics`: gauges derived from the store (runtimes
//! by state, quota use per team) plus whatever the control plane's metric
//! registry has recorded (latency histograms, circuits, queues).

use std::collections::BTreeMap;
use std::fmt::Write;

use godel_control::{Caller, Control};
use godel_core::Result;

/// Render all metrics visible to the caller.
pub fn render(c: &Control, caller: &Caller) -> Result<String> {
    let mut out = String::new();
    let runtimes = c.list(caller, false)?;
    let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &runtimes {
        *by.entry((r.runtime.clone(), r.state.to_string())).or_default() += 1;
    }
    let _ = writeln!(out, "# HELP godel_runtimes Live runtimes by runtime kind and state.");
    let _ = writeln!(out, "# TYPE godel_runtimes gauge");
    for ((rt, st), n) in &by {
        let _ = writeln!(out, "godel_runtimes{{runtime=\"{rt}\",state=\"{st}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP godel_quota_used Resources held by a team's live runtimes.");
    let _ = writeln!(out, "# TYPE godel_quota_used gauge");
    let _ = writeln!(out, "# HELP godel_quota_limit A team's quota (absent = unlimited).");
    let _ = writeln!(out, "# TYPE godel_quota_limit gauge");
    for team in c.list_teams(caller)? {
        let u = c.store().team_usage(&team.name)?;
        let t = &team.name;
        let _ = writeln!(out, "godel_quota_used{{team=\"{t}\",resource=\"agents\"}} {}", u.agents);
        let _ = writeln!(out, "godel_quota_used{{team=\"{t}\",resource=\"cpu_millis\"}} {}", u.cpu_millis);
        let _ = writeln!(out, "godel_quota_used{{team=\"{t}\",resource=\"memory_bytes\"}} {}", u.memory_bytes);
        for (name, v) in [
            ("agents", team.max_agents),
            ("cpu_millis", team.max_cpu_millis),
            ("memory_bytes", team.max_memory_bytes),
        ] {
            if let Some(v) = v {
                let _ = writeln!(out, "godel_quota_limit{{team=\"{t}\",resource=\"{name}\"}} {v}");
            }
        }
    }
    Ok(out)
}
