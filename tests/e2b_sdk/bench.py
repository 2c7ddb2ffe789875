#!/usr/bin/env python3
"""Time-to-interactive through the official `e2b` Python SDK: create a
sandbox, run a first command, kill it; N iterations (default 20, or argv[1]),
P50/P95 of each step and of the whole, printed as one JSON object.

Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY (see scenario.py).
With GODEL_URL and GODEL_TOKEN also set (godel serve --listen), the same
create → first command → kill is timed through godel's native REST API in
the same run, for comparison ("native").
"""

import json
import os
import statistics
import sys
import time
import urllib.request

from e2b import Sandbox


def pct(values, q):
    s = sorted(values)
    if not s:
        return None
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k] * 1000, 2)


def native_call(method, path, body=None):
    url = os.environ["GODEL_URL"].rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", "Bearer " + os.environ["GODEL_TOKEN"])
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def native(n):
    """create → first command → kill through godel's own /v1 API."""
    steps = {"create": [], "first_command": [], "kill": [], "total": []}
    for _ in range(n):
        t0 = time.perf_counter()
        info = native_call("POST", "/v1/runtimes", {})
        t1 = time.perf_counter()
        out = native_call("POST", f"/v1/runtimes/{info['id']}/exec", {"cmd": ["sh", "-c", "echo ready"]})
        assert out["stdout"] == "ready\n", out
        t2 = time.perf_counter()
        native_call("DELETE", f"/v1/runtimes/{info['id']}")
        t3 = time.perf_counter()
        steps["create"].append(t1 - t0)
        steps["first_command"].append(t2 - t1)
        steps["kill"].append(t3 - t2)
        steps["total"].append(t2 - t0)
    return {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in steps.items()}


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
    if os.environ.get("GODEL_URL") and os.environ.get("GODEL_TOKEN"):
        out["native"] = native(n)
    print(json.dumps(out, indent=2))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
