//! `godel bench ...`: latency benchmarks printing P50/P95/P99 next to a
//! baseline measured in the same run.

use godel_core::{Error, Result};

use crate::Ctx;
use crate::cli::BenchCmd;

pub async fn run(_ctx: &Ctx, cmd: BenchCmd) -> Result<i32> {
    match cmd {
        BenchCmd::Spawn(_) => Err(Error::unavailable("bench spawn is not built yet")),
    }
}
