#!/usr/bin/env python3
"""Conformance scenario for godel's E2B-compatible API, driven by the official,
unpatched `e2b` Python SDK (pinned in scripts/setup.d/40-e2b.sh).

Environment: E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY point at godel
(`godel serve --e2b-listen ADDR`).

Prints one line per check and a final `N passed, M failed`; exits non-zero
when anything failed. Commands use paths relative to the sandbox home (the
default cwd), so the scenario also passes on hosts where the workspace is not
mounted at /home/user; file API paths are the absolute /home/user/... the SDK
users write.
"""

import os
import sys
import time
import traceback
import uuid

from e2b import CommandExitException, Sandbox

try:
    from e2b import FileNotFoundException
except ImportError:  # e2b < 2.8 raises NotFoundException for missing files
    from e2b import NotFoundException as FileNotFoundException
from e2b.sandbox.sandbox_api import SandboxQuery

HOME = "/home/user"
results = []


def check(name):
    def wrap(fn):
        t0 = time.monotonic()
        try:
            fn()
            results.append((name, True, ""))
            print(f"ok   {name} ({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            results.append((name, False, repr(e)))
            print(f"FAIL {name}: {e!r}", flush=True)
            traceback.print_exc()
        return fn

    return wrap


def main():
    for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
        if not os.environ.get(k):
            print(f"{k} must be set", file=sys.stderr)
            return 2

    tag = uuid.uuid4().hex[:8]
    state = {}

    @check("create sandbox (template base, metadata, envs)")
    def _():
        sbx = Sandbox.create(
            "base", timeout=120, metadata={"suite": "godel", "run": tag}, envs={"GODEL_E2B": "yes"}
        )
        assert sbx.sandbox_id
        state["sbx"] = sbx

    sbx = state.get("sbx")
    if sbx is None:
        return finish()

    @check("commands.run with on_stdout/on_stderr callbacks")
    def _():
        out, err = [], []
        r = sbx.commands.run(
            "echo hello; echo oops >&2; echo $GODEL_E2B; echo $LOCAL_VAR",
            envs={"LOCAL_VAR": "local"},
            on_stdout=out.append,
            on_stderr=err.append,
        )
        assert r.exit_code == 0, r
        assert r.stdout == "hello\nyes\nlocal\n", repr(r.stdout)
        assert r.stderr == "oops\n", repr(r.stderr)
        assert "".join(out) == r.stdout, out
        assert "".join(err) == r.stderr, err

    @check("non-zero exit raises CommandExitException")
    def _():
        try:
            sbx.commands.run("echo before; exit 3")
        except CommandExitException as e:
            assert e.exit_code == 3, e.exit_code
            assert e.stdout == "before\n", repr(e.stdout)
        else:
            raise AssertionError("no CommandExitException")

    @check("background command, list, send_stdin, kill")
    def _():
        h = sbx.commands.run("cat > from_stdin.txt; sleep 600", background=True, stdin=True)
        assert h.pid > 0
        pids = [p.pid for p in sbx.commands.list()]
        assert h.pid in pids, pids
        sbx.commands.send_stdin(h.pid, "piped\n")
        sbx.commands.close_stdin(h.pid)
        deadline = time.monotonic() + 20
        while True:
            try:
                if sbx.files.read(f"{HOME}/from_stdin.txt") == "piped\n":
                    break
            except FileNotFoundException:
                pass  # the shell has not created it yet
            assert time.monotonic() < deadline, "stdin never arrived"
            time.sleep(0.1)
        assert sbx.commands.kill(h.pid) is True
        try:
            h.wait()
        except CommandExitException:
            pass
        pids = [p.pid for p in sbx.commands.list()]
        assert h.pid not in pids, pids
        assert sbx.commands.kill(h.pid) is False

    @check("background command streams output and connect() re-attaches")
    def _():
        h = sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.2; done", background=True)
        h2 = sbx.commands.connect(h.pid)
        r = h.wait()
        assert r.exit_code == 0
        assert "line3" in r.stdout, repr(r.stdout)
        h2.wait()

    @check("files.write/read/exists/list/make_dir/rename/remove")
    def _():
        info = sbx.files.write(f"{HOME}/dir/a.txt", "alpha")
        assert info.path == f"{HOME}/dir/a.txt", info
        assert sbx.files.read(f"{HOME}/dir/a.txt") == "alpha"
        assert sbx.commands.run("cat dir/a.txt").stdout == "alpha"
        assert sbx.files.exists(f"{HOME}/dir/a.txt")
        assert not sbx.files.exists(f"{HOME}/nope.txt")
        assert sbx.files.make_dir(f"{HOME}/dir/sub") is True
        assert sbx.files.make_dir(f"{HOME}/dir/sub") is False
        names = sorted(e.name for e in sbx.files.list(f"{HOME}/dir"))
        assert names == ["a.txt", "sub"], names
        e = sbx.files.rename(f"{HOME}/dir/a.txt", f"{HOME}/dir/b.txt")
        assert e.name == "b.txt", e
        assert not sbx.files.exists(f"{HOME}/dir/a.txt")
        st = sbx.files.get_info(f"{HOME}/dir/b.txt")
        assert st.size == 5 and st.type.value == "file", st
        sbx.files.remove(f"{HOME}/dir/b.txt")
        assert not sbx.files.exists(f"{HOME}/dir/b.txt")
        sbx.files.remove(f"{HOME}/dir/never-existed")
        try:
            sbx.files.read(f"{HOME}/nope.txt")
        except FileNotFoundException:
            pass
        else:
            raise AssertionError("reading a missing file did not raise")

    @check("binary upload and download (multipart, octet-stream, gzip)")
    def _():
        blob = bytes(range(256)) * 257
        sbx.files.write(f"{HOME}/bin/blob.bin", blob)
        assert sbx.files.read(f"{HOME}/bin/blob.bin", format="bytes") == blob
        sbx.files.write(f"{HOME}/bin/octet.bin", blob, use_octet_stream=True)
        assert bytes(sbx.files.read(f"{HOME}/bin/octet.bin", format="bytes")) == blob
        sbx.files.write(f"{HOME}/bin/gz.bin", blob, gzip=True)
        assert bytes(sbx.files.read(f"{HOME}/bin/gz.bin", format="bytes", gzip=True)) == blob
        size = sbx.commands.run("wc -c < bin/blob.bin").stdout.strip()
        assert size == str(len(blob)), size

    @check("write_files writes several files")
    def _():
        sbx.files.write_files(
            [
                {"path": f"{HOME}/multi/one.txt", "data": "1"},
                {"path": f"{HOME}/multi/two.txt", "data": "2"},
            ]
        )
        assert sbx.files.read(f"{HOME}/multi/two.txt") == "2"

    @check("set_timeout and get_info")
    def _():
        sbx.set_timeout(300)
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.metadata.get("run") == tag, info.metadata
        assert info.state.value == "running", info.state
        left = (info.end_at - info.started_at).total_seconds()
        assert left > 200, left

    @check("Sandbox.list filters by metadata")
    def _():
        items = Sandbox.list(query=SandboxQuery(metadata={"run": tag})).next_items()
        ids = [s.sandbox_id for s in items]
        assert ids == [sbx.sandbox_id], ids
        none = Sandbox.list(query=SandboxQuery(metadata={"run": "other"})).next_items()
        assert none == [], none

    @check("is_running and get_metrics")
    def _():
        assert sbx.is_running()
        m = sbx.get_metrics()
        assert isinstance(m, list)

    @check("pause, then connect keeps the sandbox id and its files")
    def _():
        sbx.files.write(f"{HOME}/keep.txt", "kept")
        sbx.pause()
        assert not sbx.is_running()
        info = Sandbox.get_info(sbx.sandbox_id)
        assert info.state.value == "paused", info.state
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.sandbox_id == sbx.sandbox_id
        assert again.files.read(f"{HOME}/keep.txt") == "kept"
        assert again.commands.run("cat keep.txt").stdout == "kept"
        state["sbx"] = again

    @check("kill; a second kill returns False")
    def _():
        s = state["sbx"]
        s.kill()
        assert not s.is_running()
        assert Sandbox.kill(s.sandbox_id) is False

    @check("a sandbox whose timeout passes is killed")
    def _():
        short = Sandbox.create("base", timeout=2, metadata={"run": tag})
        short.commands.run("true")
        deadline = time.monotonic() + 30
        while short.is_running():
            assert time.monotonic() < deadline, "sandbox outlived its timeout"
            time.sleep(0.5)

    @check("auto-pause on timeout keeps files; connect resumes")
    def _():
        ap = Sandbox.create("base", timeout=2, lifecycle={"on_timeout": "pause"}, metadata={"run": tag})
        ap.files.write(f"{HOME}/auto.txt", "auto")
        deadline = time.monotonic() + 30
        while ap.is_running():
            assert time.monotonic() < deadline, "sandbox outlived its timeout"
            time.sleep(0.5)
        assert Sandbox.get_info(ap.sandbox_id).state.value == "paused"
        back = Sandbox.connect(ap.sandbox_id, timeout=60)
        assert back.files.read(f"{HOME}/auto.txt") == "auto"
        back.kill()

    return finish()


def finish():
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
