"""The scenarios' shared harness: `@check(name)` runs a step at once,
prints `ok`/`FAIL` with its time and goes on after a failure; `finish()`
prints the tally and gives the exit code (non-zero when a step failed or
none ran)."""

import time
import traceback

results = []


def check(name):
    def wrap(fn):
        t0 = time.monotonic()
        try:
            fn()
            results.append((name, True))
            print(f"ok   {name} ({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            results.append((name, False))
            print(f"FAIL {name}: {e!r}", flush=True)
            traceback.print_exc()
        return fn

    return wrap


def finish():
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1
