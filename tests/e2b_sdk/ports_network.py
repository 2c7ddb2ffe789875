#!/usr/bin/env python3
"""Port URLs and network rules through the official, unpatched `e2b` Python
SDK against a real `godel serve --e2b-listen` (run by run.sh for the newest
installed SDK version).

- `get_host(port)`: a `python3 -m http.server` in the sandbox fetched
  through `<port>-<id>.<domain>` on the E2B listener; a WebSocket echo
  server in the sandbox (plain Python, RFC 6455 by hand) answered through
  the same URL; a closed port is 502; `allow_public_traffic: False` needs
  `traffic_access_token`.
- `network`: two HTTP servers this script runs on loopback-only addresses
  inside two network namespaces it creates (never an outside address);
  `deny_out`, `allow_out` + `deny_out: [ALL_TRAFFIC]`,
  `allow_internet_access=False` and `update_network` decide which one a
  sandbox reaches.

Needs root with `ip` (network namespaces); without them it prints SKIPPED
with the reason (a failure when GODEL_REQUIRE is set).
"""

import base64
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import urlparse

from e2b import Sandbox

from checks import check, finish, results

HOME = "/home/user"
API = urlparse(os.environ.get("E2B_API_URL", "http://127.0.0.1:3000"))

NETNS = {  # name: (host side, namespace side)
    "gdlA": ("10.252.0.1", "10.252.0.2"),
    "gdlB": ("10.252.0.5", "10.252.0.6"),
}
A = NETNS["gdlA"][1]
B = NETNS["gdlB"][1]

WS_SERVER = r'''
import base64, hashlib, socket, struct
G = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8765)); s.listen()
while True:
    c, _ = s.accept()
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(1)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + G).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    def rd(n):
        b = b""
        while len(b) < n:
            x = c.recv(n - len(b))
            if not x: raise EOFError
            b += x
        return b
    try:
        while True:
            b0, b1 = rd(2)
            n = b1 & 127
            if n == 126: n = struct.unpack(">H", rd(2))[0]
            mask = rd(4); data = bytes(x ^ mask[i % 4] for i, x in enumerate(rd(n)))
            if b0 & 15 == 8: break
            out = b"echo:" + data
            c.sendall(bytes([0x81, len(out)]) + out)
    except EOFError:
        pass
    c.close()
'''



def via_port_url(sbx, port, path="/", headers=None):
    """GET through the port URL: the E2B listener with Host `get_host(port)`."""
    c = http.client.HTTPConnection(API.hostname, API.port, timeout=10)
    h = {"Host": sbx.get_host(port)}
    h.update(headers or {})
    c.request("GET", path, headers=h)
    r = c.getresponse()
    return r.status, r.read()


def wait_port(sbx, port, deadline=15):
    end = time.monotonic() + deadline
    while True:
        st, body = via_port_url(sbx, port)
        if st != 502 or time.monotonic() > end:
            return st, body
        time.sleep(0.2)


def ws_echo(sbx, port, messages):
    s = socket.create_connection((API.hostname, API.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {sbx.get_host(port)}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    want = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert want in head, head
    out = []
    for m in messages:
        data = m.encode()
        mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(x ^ mask[i % 4] for i, x in enumerate(data)))
        b0, n = s.recv(2)
        body = b""
        while len(body) < n:
            body += s.recv(n - len(body))
        out.append(body.decode())
    s.close()
    return out


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, capture_output=True)


def netns_up():
    for name, (host_ip, ns_ip) in NETNS.items():
        netns_down_one(name)
        sh(f"ip netns add {name}")
        sh(f"ip link add v{name} type veth peer name eth0 netns {name}")
        sh(f"ip addr add {host_ip}/30 dev v{name} && ip link set v{name} up")
        sh(f"ip -n {name} addr add {ns_ip}/30 dev eth0 && ip -n {name} link set eth0 up && ip -n {name} link set lo up")
        sh(f"ip -n {name} route add default via {host_ip}")
    servers = []
    for name, (_, ns_ip) in NETNS.items():
        servers.append(
            subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-c", SERVE, ns_ip],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    for _, (_, ns_ip) in NETNS.items():
        end = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((ns_ip, 8080), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < end, f"server on {ns_ip} did not start"
                time.sleep(0.1)
    return servers


def netns_down_one(name):
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "link", "del", f"v{name}"], capture_output=True)


# `python3 -m http.server --bind ADDR` looks ADDR's name up first, which
# waits for DNS timeouts in a namespace without DNS; this binds directly.
SERVE = """
import http.server, socketserver, sys
class S(http.server.ThreadingHTTPServer):
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "test", 8080
S((sys.argv[1], 8080), http.server.SimpleHTTPRequestHandler).serve_forever()
"""

REACH = r"""
import sys, urllib.request
for u in sys.argv[1:]:
    try:
        urllib.request.urlopen(u, timeout=3); print("ok")
    except Exception:
        print("blocked")
"""


def reach(sbx):
    """What the sandbox reaches of (A, B)."""
    sbx.files.write(f"{HOME}/reach.py", REACH)
    r = sbx.commands.run(f"python3 reach.py http://{A}:8080/ http://{B}:8080/", timeout=30)
    return tuple(r.stdout.split())


def main():
    for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
        if not os.environ.get(k):
            print(f"{k} must be set", file=sys.stderr)
            return 2
    tag = uuid.uuid4().hex[:8]
    sandboxes = []

    def create(**kw):
        s = Sandbox.create("base", timeout=300, metadata={"run": tag}, **kw)
        sandboxes.append(s)
        return s

    try:
        sbx = create()

        @check("get_host: python3 -m http.server in the sandbox, fetched through the port URL")
        def _():
            sbx.files.write(f"{HOME}/www/hello.txt", "hello through the port URL")
            sbx.commands.run("cd www && exec python3 -m http.server 8000", background=True)
            st, body = wait_port(sbx, 8000)
            assert st == 200, (st, body)
            st, body = via_port_url(sbx, 8000, "/hello.txt")
            assert (st, body) == (200, b"hello through the port URL"), (st, body)

        @check("get_host: a WebSocket echo through the port URL")
        def _():
            sbx.files.write(f"{HOME}/ws.py", WS_SERVER)
            sbx.commands.run("exec python3 ws.py", background=True)
            end = time.monotonic() + 15
            while True:
                try:
                    assert ws_echo(sbx, 8765, ["hi", "there"]) == ["echo:hi", "echo:there"]
                    break
                except (AssertionError, OSError):
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.2)

        @check("get_host: a closed port is 502, an unknown sandbox 404")
        def _():
            st, body = via_port_url(sbx, 8999)
            assert st == 502 and b"port is not open" in body, (st, body)
            c = http.client.HTTPConnection(API.hostname, API.port, timeout=10)
            c.request("GET", "/", headers={"Host": sbx.get_host(8000).replace(sbx.sandbox_id, "rt-nosuchsandbox")})
            assert c.getresponse().status == 404

        @check("allow_public_traffic False: the port URL needs traffic_access_token")
        def _():
            priv = create(network={"allow_public_traffic": False})
            assert priv.traffic_access_token
            priv.commands.run("exec python3 -m http.server 8000", background=True)
            time.sleep(0.5)
            st, _ = via_port_url(priv, 8000)
            assert st == 403, st
            end = time.monotonic() + 15
            while True:
                st, body = via_port_url(priv, 8000, headers={"e2b-traffic-access-token": priv.traffic_access_token})
                if st == 200 or time.monotonic() > end:
                    break
                time.sleep(0.2)
            assert st == 200, (st, body)

        if os.geteuid() != 0 or not shutil.which("ip"):
            why = "needs root and ip (network namespaces) for the allowOut/denyOut servers"
            if os.environ.get("GODEL_REQUIRE"):
                results.append(("network rules", False))
                print(f"FAIL network rules: {why}")
            else:
                print(f"SKIPPED network rules: {why}")
            return finish()
        servers = netns_up()
        try:

            @check("default: internet on, both servers reachable")
            def _():
                assert reach(create()) == ("ok", "ok")

            @check("deny_out blocks one server, the other stays reachable")
            def _():
                assert reach(create(network={"deny_out": [f"{B}/32"]})) == ("ok", "blocked")

            @check("allow_out wins over deny_out ALL_TRAFFIC")
            def _():
                s = create(network={"allow_out": [A], "deny_out": ["0.0.0.0/0"]})
                assert reach(s) == ("ok", "blocked")

            @check("allow_internet_access False blocks both; update_network opens one")
            def _():
                s = create(allow_internet_access=False)
                assert reach(s) == ("blocked", "blocked")
                s.update_network({"allow_out": [B], "deny_out": ["0.0.0.0/0"]})
                assert reach(s) == ("blocked", "ok")

            @check("a domain name or a bad CIDR is refused naming the field")
            def _():
                for net, field in (
                    ({"allow_out": ["example.com"], "deny_out": ["0.0.0.0/0"]}, "allowOut[0]"),
                    ({"deny_out": ["10.0.0.0/40"]}, "denyOut[0]"),
                ):
                    try:
                        create(network=net)
                    except Exception as e:  # noqa: BLE001 - the SDK's error type varies by version
                        assert field in str(e), str(e)
                    else:
                        raise AssertionError(f"{net} was accepted")
        finally:
            for p in servers:
                p.kill()
            for name in NETNS:
                netns_down_one(name)
    finally:
        for s in sandboxes:
            try:
                s.kill()
            except Exception:  # noqa: BLE001
                pass
    return finish()



if __name__ == "__main__":
    sys.exit(main())
