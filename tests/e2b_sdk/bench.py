#!/usr/bin/env python3
"""Time-to-interactive through the official `e2b` Python SDK: create a
sandbox, run a first command, kill it; N iterations (default 20, or argv[1]),
P50/P95 of each step and of the whole, printed as one JSON object.

Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY (see scenario.py).
"""

import json
import statistics
import sys
import time

from e2b import Sandbox


def pct(values, q):
    s = sorted(values)
    if not s:
        return None
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k] * 1000, 2)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    steps = {"create": [], "first_command": [], "kill": [], "total": []}
    failures = 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            sbx = Sandbox.create("base", timeout=60)
            t1 = time.perf_counter()
            r = sbx.commands.run("echo ready")
            assert r.stdout == "ready\n", r.stdout
            t2 = time.perf_counter()
            sbx.kill()
            t3 = time.perf_counter()
        except Exception as e:  # noqa: BLE001 - count and go on
            failures += 1
            print(f"iteration failed: {e!r}", file=sys.stderr)
            continue
        steps["create"].append(t1 - t0)
        steps["first_command"].append(t2 - t1)
        steps["kill"].append(t3 - t2)
        steps["total"].append(t2 - t0)
    out = {
        "iterations": n,
        "failures": failures,
        "unit": "ms",
        "note": "total = create + first command (time to interactive); kill reported apart",
    }
    for k, v in steps.items():
        out[k] = {
            "p50": pct(v, 50),
            "p95": pct(v, 95),
            "mean": round(statistics.mean(v) * 1000, 2) if v else None,
        }
    print(json.dumps(out, indent=2))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
