//! Where benchmark results are kept for `godel bench report`: one JSON file
//! per suite (`<dir>/<suite>.json`, the latest run), in `$GODEL_BENCH_RESULTS`
//! or `$GODEL_HOME/bench-results`.

use std::path::{Path, PathBuf};

use godel_core::{Error, Result};
use serde_json::Value;

/// The results directory for a `$GODEL_HOME`.
pub fn dir(home: &Path) -> PathBuf {
    std::env::var_os("GODEL_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join("bench-results"))
}

/// Save `v` as the latest result of `suite` (stamped with the time and the machine).
pub fn save(home: &Path, suite: &str, v: &Value) -> Result<PathBuf> {
    let d = dir(home);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("create {}", d.display()), &e))?;
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("finished_at".into(), chrono::Utc::now().to_rfc3339().into());
        o.insert(
            "machine".into(),
            serde_json::to_value(crate::daemon::Machine::probe()).unwrap_or_default(),
        );
    }
    let p = d.join(format!("{suite}.json"));
    let text = serde_json::to_string_pretty(&v).map_err(|e| Error::internal(e.to_string()))?;
    std::fs::write(&p, text).map_err(|e| Error::io(format!("write {}", p.display()), &e))?;
    Ok(p)
}

/// The latest result of `suite`, if any.
pub fn load(home: &Path, suite: &str) -> Option<Value> {
    let p = dir(home).join(format!("{suite}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}
