//! `/metrics`: the control plane's registry (latency histograms, circuits,
//! queues, fallbacks, restarts, OOMs) with gauges refreshed from the store
//! (runtimes by kind and state, quota use per team) just before rendering.
//! Admin only: the labels name every team.

use std::collections::BTreeMap;

use godel_control::{Caller, Control};
use godel_core::Result;

/// Render all metrics (OpenMetrics text).
pub fn render(c: &Control, caller: &Caller) -> Result<String> {
    caller.require_admin("reading /metrics")?;
    let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in c.list(caller, false)? {
        *by.entry((r.runtime.clone(), r.state.to_string()))
            .or_default() += 1;
    }
    c.metrics().set_runtime_counts(
        by.iter()
            .map(|((rt, st), n)| (rt.as_str(), st.as_str(), *n)),
    );
    c.refresh_gauges()?;
    Ok(c.metrics().render())
}
