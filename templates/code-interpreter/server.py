"""godel's code-interpreter server: the HTTP API the unchanged
`e2b-code-interpreter` SDKs call on port 49999 inside a sandbox, over real
Jupyter kernels (ipykernel driven by jupyter_client).

Written from the SDK's client side (what it sends, what it parses):

- `POST /execute` `{code, context_id, language, env_vars}` answers a stream
  of JSON lines: `stdout`/`stderr` `{text, timestamp}` (Unix ns), `result`
  (one per `execute_result` with `is_main_result: true`, one per
  `display_data`; MIME types as `text`, `html`, `png`, ...), `error`
  `{name, value, traceback}`, and `number_of_executions`.
- `POST /contexts` `{language, cwd}` starts a kernel and answers
  `{id, language, cwd}`; `GET /contexts` lists them; `DELETE
  /contexts/{id}` and `POST /contexts/{id}/restart`.
- `GET /health`.

One kernel per context; one execution at a time per context (later ones
wait). Only Python kernels exist here: another language is refused with 400
naming it. `env_vars` apply to that execution only.
"""

import argparse
import json
import os
import queue
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jupyter_client.manager import KernelManager

MIME_KEYS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}

class Context:
    def __init__(self, language, cwd):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.lock = threading.Lock()
        self.km = None
        self.kc = None
        self.start()

    def start(self):
        env = dict(os.environ)
        # Figures render as PNG display data when shown (matplotlib is only
        # imported by the code that uses it, not at start).
        env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        self.km = KernelManager(kernel_name="python3")
        # The kernel is this venv's interpreter, not whatever `python3` is first on PATH.
        self.km.kernel_cmd = [
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ]
        self.km.start_kernel(cwd=self.cwd, env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run_silent(self, code):
        msg_id = self.kc.execute(code, silent=True, store_history=False)
        self.drain(msg_id, lambda _: None)

    def drain(self, msg_id, emit):
        """Forward the kernel's output of one request until it is idle."""
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=3600)
            except queue.Empty:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                return
            emit(msg)

    def shutdown(self):
        try:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
        except Exception:
            pass

    def restart(self):
        self.shutdown()
        self.start()

    def json(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}


def now_ns():
    return time.time_ns()


def result_of(content, main):
    out = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in content.get("data", {}).items():
        key = MIME_KEYS.get(mime)
        if key:
            out[key] = value
        else:
            extra[mime] = value
    if extra:
        out["extra"] = extra
    return out


def py_literal(s):
    return json.dumps(s)


class Server:
    def __init__(self, cwd):
        self.cwd = cwd
        self.contexts = {}
        self.lock = threading.Lock()
        self.default = self.add("python", cwd)

    def add(self, language, cwd):
        ctx = Context(language, cwd)
        with self.lock:
            self.contexts[ctx.id] = ctx
        return ctx


SERVER = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("code-interpreter: " + (fmt % args) + "\n")

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw.strip():
            return {}
        return json.loads(raw)

    def send_json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_text(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.send_json(200, {"status": "ok"})
        if self.path == "/contexts":
            with SERVER.lock:
                items = [c.json() for c in SERVER.contexts.values()]
            return self.send_json(200, items)
        self.send_error_text(404, f"no route {self.path}")

    def do_DELETE(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "contexts":
            with SERVER.lock:
                ctx = SERVER.contexts.pop(parts[1], None)
            if ctx is None:
                return self.send_error_text(404, f"context {parts[1]} not found")
            ctx.shutdown()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_error_text(404, f"no route {self.path}")

    def do_POST(self):
        try:
            body = self.body()
        except ValueError as e:
            return self.send_error_text(400, f"invalid JSON body: {e}")
        parts = self.path.strip("/").split("/")
        if self.path == "/execute":
            return self.execute(body)
        if self.path == "/contexts":
            language = body.get("language") or "python"
            if language != "python":
                return self.send_error_text(
                    400, f"language {language!r} is not supported: only python kernels run here"
                )
            ctx = SERVER.add(language, body.get("cwd") or SERVER.cwd)
            return self.send_json(200, ctx.json())
        if len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart":
            ctx = SERVER.contexts.get(parts[1])
            if ctx is None:
                return self.send_error_text(404, f"context {parts[1]} not found")
            with ctx.lock:
                ctx.restart()
            return self.send_json(200, ctx.json())
        self.send_error_text(404, f"no route {self.path}")

    def chunk(self, value):
        data = (json.dumps(value) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def execute(self, body):
        code = body.get("code")
        if not isinstance(code, str):
            return self.send_error_text(400, "code must be a string")
        language = body.get("language")
        if body.get("context_id"):
            ctx = SERVER.contexts.get(body["context_id"])
            if ctx is None:
                return self.send_error_text(404, f"context {body['context_id']} not found")
        elif language not in (None, "", "python"):
            return self.send_error_text(
                400, f"language {language!r} is not supported: only python kernels run here"
            )
        else:
            ctx = SERVER.default
        env = body.get("env_vars") or {}
        with ctx.lock:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if env:
                ctx.run_silent(
                    "import os as __o\n__godel_saved = {k: __o.environ.get(k) for k in %s}\n"
                    "__o.environ.update(%s)\ndel __o" % (py_literal(list(env)), py_literal(env))
                )
            msg_id = ctx.kc.execute(code, store_history=True)

            def emit(msg):
                kind, c = msg["msg_type"], msg["content"]
                if kind == "stream":
                    self.chunk({"type": c["name"], "text": c["text"], "timestamp": now_ns()})
                elif kind == "execute_result":
                    self.chunk(result_of(c, True))
                elif kind == "display_data":
                    self.chunk(result_of(c, False))
                elif kind == "error":
                    self.chunk(
                        {
                            "type": "error",
                            "name": c.get("ename", ""),
                            "value": c.get("evalue", ""),
                            "traceback": "\n".join(c.get("traceback", [])),
                        }
                    )
                elif kind == "execute_input":
                    self.chunk(
                        {"type": "number_of_executions", "execution_count": c.get("execution_count")}
                    )

            try:
                ctx.drain(msg_id, emit)
            except (BrokenPipeError, ConnectionResetError):
                # The client went away: stop the cell rather than let it run on.
                ctx.km.interrupt_kernel()
                ctx.drain(msg_id, lambda _: None)
                return
            finally:
                if env:
                    ctx.run_silent(
                        "import os as __o\n"
                        "for __k, __v in __godel_saved.items():\n"
                        "    __o.environ.pop(__k, None) if __v is None else __o.environ.__setitem__(__k, __v)\n"
                        "del __o, __godel_saved"
                    )
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


def main():
    global SERVER
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=49999)
    p.add_argument("--cwd", default=os.environ.get("HOME", "/home/user"))
    a = p.parse_args()
    os.environ.setdefault("JUPYTER_RUNTIME_DIR", "/tmp/jupyter-runtime")
    SERVER = Server(a.cwd)
    httpd = ThreadingHTTPServer((a.host, a.port), Handler)
    httpd.daemon_threads = True
    sys.stderr.write(f"code-interpreter: listening on {a.host}:{a.port}\n")
    httpd.serve_forever()


if __name__ == "__main__":
    main()
