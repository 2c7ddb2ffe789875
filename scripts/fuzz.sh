#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a bounded time each and write a
# summary (executions, crashes per target) to $GODEL_HOME/bench-results/fuzz.json
# (or $GODEL_BENCH_RESULTS/fuzz.json) for `godel bench report`.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; CI runs 20)
# Uses nightly when installed, else the stable toolchain with RUSTC_BOOTSTRAP=1
# (cargo-fuzz passes -Z flags) and no sanitizer. Exits non-zero on a crash.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-60}"
cd "$root/fuzz"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
  sanitizer=address
else
  export RUSTC_BOOTSTRAP=1
  sanitizer=none
fi
results="${GODEL_BENCH_RESULTS:-${GODEL_HOME:-$HOME/.godel}/bench-results}"
mkdir -p "$results" target/logs
targets=$(cargo "${toolchain[@]}" fuzz list)
cargo "${toolchain[@]}" fuzz build --sanitizer "$sanitizer" -O >&2
json='{"bench":"fuzz","sanitizer":"'"$sanitizer"'","secs_per_target":'"$secs"',"targets":['
sep=''
failed=0
for t in $targets; do
  log="target/logs/$t.log"
  mkdir -p "corpus/$t"
  rc=0
  cargo "${toolchain[@]}" fuzz run --sanitizer "$sanitizer" -O "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crashes=0
  if [ "$rc" -ne 0 ]; then crashes=1; failed=1; tail -40 "$log" >&2; fi
  echo "fuzz $t: ${execs:-0} executions in ${secs}s, $crashes crashes" >&2
  json+="$sep{\"name\":\"$t\",\"secs\":$secs,\"execs\":${execs:-0},\"crashes\":$crashes,\"exit\":$rc}"
  sep=','
done
json+="],\"finished_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"machine\":{\"cores\":$(nproc),\"memory_gib\":$(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo),\"cpu_model\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\",\"load_avg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"accelerator\":\"none\"}}"
echo "$json" > "$results/fuzz.json"
echo "fuzz summary: $results/fuzz.json" >&2
exit "$failed"
