#!/usr/bin/env python3
"""The unchanged `e2b-code-interpreter` Python SDK (pinned in
scripts/setup.d/45-code-interpreter.sh) against godel's `code-interpreter-v1`
template, plus the `e2b` SDK's fork, snapshots and volumes.

Environment: E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY point at godel
(`godel serve --e2b-listen ADDR`). Prints one line per check and a final
`N passed, M failed`; exits non-zero when anything failed.

`--bench N`: create → first `run_code` result, N times; prints P50/P95 as
JSON (baseline in the same run: create → first command of the `base`
template).
"""

import base64
import json
import os
import statistics
import sys
import time

from e2b import Sandbox as BaseSandbox
from e2b import Volume
from e2b_code_interpreter import Sandbox

from checks import check, finish


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench(n):
    ci, base = [], []
    for _ in range(n):
        t0 = time.monotonic()
        sbx = Sandbox.create(timeout=120)
        sbx.run_code("1")
        ci.append((time.monotonic() - t0) * 1000)
        sbx.kill()
        t0 = time.monotonic()
        b = BaseSandbox.create(timeout=120)
        b.commands.run("true")
        base.append((time.monotonic() - t0) * 1000)
        b.kill()
    out = {
        "runs": n,
        "code_interpreter_create_to_first_result_ms": {
            "p50": statistics.median(ci),
            "p95": pct(ci, 95),
        },
        "baseline_base_create_to_first_command_ms": {
            "p50": statistics.median(base),
            "p95": pct(base, 95),
        },
    }
    print(json.dumps(out))
    return 0


def main():
    for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
        if not os.environ.get(k):
            print(f"{k} must be set", file=sys.stderr)
            return 2
    if len(sys.argv) > 2 and sys.argv[1] == "--bench":
        return bench(int(sys.argv[2]))
    state = {}

    @check("Sandbox.create() starts code-interpreter-v1")
    def _():
        state["sbx"] = Sandbox.create(timeout=300)

    sbx = state.get("sbx")
    if sbx is not None:

        @check("state is kept across run_code calls")
        def _():
            sbx.run_code("x = 1")
            ex = sbx.run_code("x + 1")
            assert ex.text == "2", ex
            assert ex.error is None, ex.error

        @check("stdout and stderr callbacks")
        def _():
            out, err = [], []
            ex = sbx.run_code(
                "import sys\nprint('to out')\nprint('to err', file=sys.stderr)",
                on_stdout=lambda m: out.append(m.line),
                on_stderr=lambda m: err.append(m.line),
            )
            assert "".join(out) == "to out\n", out
            assert "".join(err) == "to err\n", err
            assert ex.logs.stdout == ["to out\n"], ex.logs

        @check("an exception is Execution.error")
        def _():
            errors = []
            ex = sbx.run_code("1 / 0", on_error=errors.append)
            assert ex.error is not None and ex.error.name == "ZeroDivisionError", ex
            assert "division by zero" in ex.error.value, ex.error
            assert "ZeroDivisionError" in ex.error.traceback
            assert errors and errors[0].name == "ZeroDivisionError"
            # The kernel lives on.
            assert sbx.run_code("x * 10").text == "10"

        @check("a matplotlib figure comes back as a PNG")
        def _():
            ex = sbx.run_code(
                "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()"
            )
            pngs = [r.png for r in ex.results if r.png]
            assert pngs, ex.results
            assert base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"

        @check("env vars of one execution only")
        def _():
            ex = sbx.run_code("import os; os.environ.get('GODEL_X')", envs={"GODEL_X": "y"})
            assert ex.text == "'y'", ex
            assert sbx.run_code("os.environ.get('GODEL_X')").text is None

        @check("a context of its own")
        def _():
            ctx = sbx.create_code_context()
            assert sbx.run_code("'x' in globals()", context=ctx).text == "False"
            assert sbx.run_code("'x' in globals()").text == "True"

        @check("fork of 3 keeps the files")
        def _():
            sbx.files.write("/home/user/fork.txt", "from the parent")
            forks = sbx.fork(count=3, timeout=60)
            assert len(forks) == 3, forks
            for f in forks:
                assert not isinstance(f, Exception), f
                assert f.files.read("/home/user/fork.txt") == "from the parent"
            # A fork's interpreter runs (files are forked, kernel memory is not).
            assert forks[0].run_code("open('fork.txt').read()").text == "'from the parent'"
            ids = {f.sandbox_id for f in forks}
            assert len(ids) == 3 and sbx.sandbox_id not in ids
            for f in forks:
                f.kill()

        @check("snapshot: create, list, start from, delete")
        def _():
            sbx.files.write("/home/user/snap.txt", "snapshotted")
            info = BaseSandbox.create_snapshot(sbx.sandbox_id)
            listed = [s.snapshot_id for s in BaseSandbox.list_snapshots().next_items()]
            assert info.snapshot_id in listed, listed
            mine = BaseSandbox.list_snapshots(sandbox_id=sbx.sandbox_id).next_items()
            assert [s.snapshot_id for s in mine] == [info.snapshot_id], mine
            s2 = BaseSandbox.create(info.snapshot_id, timeout=60)
            assert s2.files.read("/home/user/snap.txt") == "snapshotted"
            s2.kill()
            assert BaseSandbox.delete_snapshot(info.snapshot_id) is True

        @check("a volume is shared by sandboxes and outlives them")
        def _():
            vol = Volume.create(f"data-{os.getpid()}")
            a = BaseSandbox.create(volume_mounts={"/mnt/data": vol}, timeout=60)
            a.commands.run("echo kept > /mnt/data/f.txt")
            a.kill()
            b = BaseSandbox.create(volume_mounts={"/mnt/data": vol.name}, timeout=60)
            assert b.commands.run("cat /mnt/data/f.txt").stdout == "kept\n"
            b.kill()
            assert Volume.destroy(vol.volume_id) is True

        @check("pause, then connect: the interpreter answers again")
        def _():
            sbx.pause()
            again = Sandbox.connect(sbx.sandbox_id)
            assert again.run_code("2 * 21").text == "42"

        @check("kill")
        def _():
            sbx.kill()

    return finish()


if __name__ == "__main__":
    sys.exit(main())
