#!/usr/bin/env python3
"""Reliability suite (issue 14): the real `atcr` binary on loopback, attacked and crashed.

Parts (each bounded in time and count, each stops by itself):
  cleanup     abandoned uploads (sessions with and without bytes) removed by the idle
              expiry; the per-identity cap refuses more, and frees up after the sweep.
              Starts first and is checked last, so its minute of idle time overlaps the rest.
  idle        1,100 connections that send nothing, the HTTP/2 preface, or headers a byte
              at a time, kept up (reconnecting) for FLOOD_SECS, while victims probe /_health.
  slow-body   1,100 uploads (and login forms) that declare 1 MB and send 1 byte every 5 s,
              kept up likewise; a slow-but-steady upload must still succeed, the hostile
              uploads' staged data must be gone afterwards.
  kill9       rounds of kill -9 during concurrent chunked uploads and manifest bursts;
              after each restart every acknowledged blob and manifest is byte-exact, every
              blob file on disk hashes to its name, no staged upload is visible as a blob.
  disk-full   the data dir on a small tmpfs: ENOSPC answers 507 (printed in full), staged
              data is removed at once, reads go on, restart while full works, the
              free-space watermark refuses uploads before the disk is full, and uploads work
              again once space is freed.

Victims probe from 127.0.0.2 (another address) and 127.0.0.1 (the attacker's own address),
one fresh connection per probe, in a separate process; their worst latency is asserted
(< VICTIM_MAX_SECS). Prints one line per check and a summary; exits 1 on any failure.
"""

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HOSTILE = int(os.environ.get("FLOOD_CONNECTIONS", "1100"))
FLOOD_SECS = float(os.environ.get("FLOOD_SECS", "15"))
VICTIM_MAX_SECS = float(os.environ.get("VICTIM_MAX_SECS", "1.0"))
KILL_ROUNDS = int(os.environ.get("KILL_ROUNDS", "3"))

RESULTS = {"pass": 0, "fail": 0}
REPORT = []
STARTED = []  # every server process, killed at exit whatever happens


def ok(what):
    RESULTS["pass"] += 1
    print(f"  ok   {what}", flush=True)


def bad(what, detail=""):
    RESULTS["fail"] += 1
    print(f"  FAIL {what}", flush=True)
    if detail:
        for line in str(detail).splitlines()[-20:]:
            print(f"       {line}", flush=True)


def check(cond, what, detail=""):
    if cond:
        ok(what)
    else:
        bad(what, detail)
    return cond


def section(name):
    print(f"\n== {name}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


# ---- the server --------------------------------------------------------------------------


class Server:
    def __init__(self, binary, data_dir, log_path, env=None):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = dict(env or {})
        self.port = free_port()
        self.proc = None

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def start(self, timeout=30):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATCR_")}
        env.update(
            {
                "ATCR_AUTH_MODE": "none",
                "ATCR_SERVER_LISTEN": f"127.0.0.1:{self.port}",
                "ATCR_SERVER_DATA_DIR": self.data_dir,
                "RUST_LOG": os.environ.get("RUST_LOG", "atcr=info"),
            }
        )
        env.update(self.env)
        log = open(self.log_path, "a")
        log.write(f"\n---- start {time.strftime('%H:%M:%S')} {self.env}\n")
        log.flush()
        self.proc = subprocess.Popen([self.binary, "serve"], env=env, stdout=log, stderr=log)
        STARTED.append(self.proc)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"atcr exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if request(self.addr, "GET", "/_health", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"atcr did not answer /_health within {timeout}s")

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


def request(addr, method, path, body=None, headers=None, timeout=10, source=None):
    """One request on a fresh connection: (status, headers dict (lowercase), body bytes)."""
    conn = http.client.HTTPConnection(
        addr[0], addr[1], timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def send_reading(addr, method, path, body, timeout=60):
    """A request whose body is sent while the answer is read, as Go clients (docker,
    containerd, skopeo) do: a server may answer (and close) before the body is through.
    Returns (status, headers dict (lowercase), body bytes)."""
    s = socket.create_connection(addr, timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    def send():
        try:
            s.sendall(head)
            view = memoryview(body)
            for i in range(0, len(body), 1 << 16):
                s.sendall(view[i : i + (1 << 16)])
        except OSError:
            pass

    t = threading.Thread(target=send)
    t.start()
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head_b, _, rest = buf.partition(b"\r\n\r\n")
        lines = head_b.decode(errors="replace").split("\r\n")
        status = int(lines[0].split(" ")[1]) if lines and " " in lines[0] else 0
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        want = int(headers.get("content-length", "0"))
        while len(rest) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest
    finally:
        s.close()
        t.join(timeout)


def push_blob(addr, repo, data):
    """POST ?digest= (monolithic): the status."""
    st, _, body = send_reading(addr, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", data)
    return st, body


def chunked_push(addr, repo, data, chunk):
    """POST, PATCH chunks, PUT ?digest=: the final status (or the failing step's)."""
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=30)
    try:
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
        r = conn.getresponse()
        r.read()
        if r.status != 202:
            return r.status
        loc = r.getheader("Location")
        for i in range(0, len(data), chunk):
            part = data[i : i + chunk]
            conn.request(
                "PATCH",
                loc,
                body=part,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{i}-{i + len(part) - 1}",
                },
            )
            r = conn.getresponse()
            r.read()
            if r.status != 202:
                return r.status
            loc = r.getheader("Location")
        sep = "&" if "?" in loc else "?"
        conn.request("PUT", f"{loc}{sep}digest={sha256(data)}", body=b"")
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def manifest_for(config_digest, config_len, layers):
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_len,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}
                for d, n in layers
            ],
        },
        separators=(",", ":"),
    ).encode()


def put_manifest(addr, repo, ref, body):
    st, h, _ = request(
        addr,
        "PUT",
        f"/v2/{repo}/manifests/{ref}",
        body=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    return st


def staged_entries(data_dir):
    d = os.path.join(data_dir, "blobs", "uploads")
    try:
        return sorted(os.listdir(d))
    except FileNotFoundError:
        return []


# ---- victims (a separate process, so the attackers' event loop cannot skew them) -----------

VICTIM_CODE = r"""
import http.client, json, sys, time
host, port, source, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
lat, statuses, errors = [], {}, 0
start = time.time()
end = start + secs
worst_at = 0.0
while time.time() < end:
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0))
        c.request("GET", "/_health", headers={"Connection": "close"})
        r = c.getresponse(); r.read(); c.close()
        statuses[r.status] = statuses.get(r.status, 0) + 1
    except Exception as e:
        errors += 1
        kind = "error:" + type(e).__name__
        statuses[kind] = statuses.get(kind, 0) + 1
    took = time.perf_counter() - t
    if not lat or took > max(lat):
        worst_at = time.time() - start - took
    lat.append(took)
    time.sleep(0.1)
lat.sort()
print(json.dumps({"n": len(lat), "worst": lat[-1] if lat else None, "worst_at": worst_at,
                  "p50": lat[len(lat)//2] if lat else None,
                  "p99": lat[int(len(lat)*0.99)] if lat else None,
                  "statuses": statuses, "errors": errors}))
"""


CONTROL_CODE = r"""
import asyncio, sys
async def serve(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"ok\"}")
            await w.drain()
            break
    except Exception:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(float(sys.argv[1]))
asyncio.run(main())
"""


def start_control(secs):
    """A trivial HTTP server in its own process: probing it during a flood measures what
    the machine itself (scheduling, other load) adds to every latency."""
    p = subprocess.Popen([sys.executable, "-c", CONTROL_CODE, str(secs + 30)], stdout=subprocess.PIPE, text=True)
    STARTED.append(p)
    port = int(p.stdout.readline())
    return p, ("127.0.0.1", port)


def start_victim(addr, source, secs):
    return subprocess.Popen(
        [sys.executable, "-c", VICTIM_CODE, addr[0], str(addr[1]), source, str(secs)],
        stdout=subprocess.PIPE,
        text=True,
    )


def victim_result(proc):
    out, _ = proc.communicate(timeout=120)
    return json.loads(out)


# ---- attackers -----------------------------------------------------------------------------


class Flood:
    """Keeps `n` hostile connections up until `secs` have passed (reconnecting 1 s after the
    server closes one). `kind(i)` picks the behaviour of connection slot i."""

    def __init__(self, addr, n, secs, behaviour):
        self.addr = addr
        self.n = n
        self.secs = secs
        self.behaviour = behaviour
        self.opened = 0
        self.closed_by_server = 0
        self.answers = {}
        self.max_open = 0
        self.open_now = 0

    async def slot(self, i, end):
        while time.time() < end:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(*self.addr), 5)
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            self.opened += 1
            self.open_now += 1
            self.max_open = max(self.max_open, self.open_now)
            try:
                status = await self.behaviour(i, r, w, end)
                if status is not None:
                    self.answers[status] = self.answers.get(status, 0) + 1
                    self.closed_by_server += 1
            except (OSError, asyncio.IncompleteReadError):
                self.closed_by_server += 1
            finally:
                self.open_now -= 1
                w.close()
            # The attacker takes its place again a second later: the pressure on the slots
            # stays, without turning into a CPU-bound connect flood (a different attack).
            await asyncio.sleep(1.0)

    async def run(self):
        end = time.time() + self.secs
        await asyncio.gather(*(self.slot(i, end) for i in range(self.n)))


async def wait_closed_or(r, end, step=None):
    """Wait for the server to answer/close until `end`; `step` (if any) is awaited between
    reads. Returns the HTTP status of an answer, 0 for a bare close, None at `end`."""
    buf = b""
    while time.time() < end:
        if step is not None:
            alive = await step()
            if not alive:
                step = None
        try:
            chunk = await asyncio.wait_for(r.read(4096), 0.5 if step is None else 0.01)
        except asyncio.TimeoutError:
            continue
        if not chunk:
            return parse_status(buf)
        buf += chunk
        if b"\r\n\r\n" in buf:
            return parse_status(buf)
    return None


def parse_status(buf):
    try:
        return int(buf.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def idle_behaviour(i, r, w, end):
    """Three kinds of quiet connection: silent, HTTP/2 preface then silent, trickled headers."""

    async def go():
        kind = i % 3
        if kind == 1:
            w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            await w.drain()
        if kind == 2:
            w.write(b"GET /_health HTTP/1.1\r\nHost: x\r\n")
            await w.drain()
            state = {"next": time.time() + 1}

            async def trickle():
                if time.time() >= state["next"]:
                    w.write(b"X")
                    await w.drain()
                    state["next"] = time.time() + 1
                return True

            return await wait_closed_or(r, end, trickle)
        return await wait_closed_or(r, end)

    return go()


def slow_body_behaviour(i, r, w, end):
    """An upload (or a login form) that declares 1 MB and sends one byte every 5 s."""

    async def go():
        if i % 4 == 3:
            head = (
                b"POST /login HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1048576\r\n\r\n"
            )
        else:
            digest = sha256(os.urandom(16))
            head = (
                f"POST /v2/flood{i}/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n"
            ).encode()
        w.write(head + b"x")
        await w.drain()
        state = {"next": time.time() + 5}

        async def dribble():
            if time.time() >= state["next"]:
                w.write(b"x")
                await w.drain()
                state["next"] = time.time() + 5
            return True

        return await wait_closed_or(r, end, dribble)

    return go()


def run_flood(name, server, behaviour, extra=None):
    """Flood + victims (+ a control victim probing a trivial server); returns (victim
    results, control result, flood, extra's result)."""
    control_proc, control_addr = start_control(FLOOD_SECS)
    victims = {
        "other address (127.0.0.2)": start_victim(server.addr, "127.0.0.2", FLOOD_SECS),
        "attacker's address (127.0.0.1)": start_victim(server.addr, "127.0.0.1", FLOOD_SECS),
    }
    control = start_victim(control_addr, "127.0.0.2", FLOOD_SECS)
    flood = Flood(server.addr, HOSTILE, FLOOD_SECS, behaviour)
    extra_thread = None
    extra_result = {}
    if extra:
        extra_thread = threading.Thread(target=lambda: extra_result.update(extra()))
        extra_thread.start()
    asyncio.run(flood.run())
    if extra_thread:
        extra_thread.join(120)
    results = {k: victim_result(p) for k, p in victims.items()}
    control_result = victim_result(control)
    control_proc.kill()
    control_proc.wait(10)
    print(
        f"  {name}: {flood.opened} hostile connections opened (at most {flood.max_open} at once), "
        f"{flood.closed_by_server} closed or answered by the server; answers {flood.answers}",
        flush=True,
    )
    for k, v in list(results.items()) + [("control (a trivial server, same machine)", control_result)]:
        print(
            f"  victim from the {k}: {v['n']} probes, worst {v['worst']*1000:.0f} ms (at {v['worst_at']:.1f} s), "
            f"p99 {v['p99']*1000:.0f} ms, p50 {v['p50']*1000:.0f} ms, statuses {v['statuses']}",
            flush=True,
        )
    for k, v in results.items():
        REPORT.append(
            f"{name} flood ({HOSTILE} hostile connections, {FLOOD_SECS:.0f} s), victim from the {k}: "
            f"worst /_health {v['worst']*1000:.0f} ms over {v['n']} probes (p99 {v['p99']*1000:.0f} ms), "
            f"statuses {v['statuses']}; control worst {control_result['worst']*1000:.0f} ms"
        )
    return results, control_result, flood, extra_result


def assert_victims(name, results, control, same_address_min_ok, other_min_ok=0.98):
    """Another address must always get 200 at once. The attacker's own address shares its
    connection budget with the attacker: each probe must still be answered within the bound
    (200, or a quick 503 / close when the share was busy), and at least `same_address_min_ok`
    of them must be 200. The bound is VICTIM_MAX_SECS; when the machine itself stalls even
    the control server for longer, that stall (plus 0.5 s) is allowed and said so."""
    bound = VICTIM_MAX_SECS
    if control["worst"] is not None and control["worst"] + 0.5 > bound:
        bound = control["worst"] + 0.5
        print(
            f"  note: the machine stalled even the control server for {control['worst']*1000:.0f} ms; "
            f"the bound is {bound*1000:.0f} ms for this flood",
            flush=True,
        )
    for k, v in results.items():
        worst_ok = v["worst"] is not None and v["worst"] < bound
        check(
            worst_ok,
            f"{name}: the victim from the {k}: worst /_health {v['worst']*1000:.0f} ms < {bound*1000:.0f} ms",
            v,
        )
        ok_share = v["statuses"].get("200", 0) / max(v["n"], 1)
        if "attacker" in k:
            timeouts = sum(n for s, n in v["statuses"].items() if "timeout" in s.lower())
            check(
                timeouts == 0 and ok_share >= same_address_min_ok,
                f"{name}: the victim from the {k}: {ok_share:.0%} got 200 (at least "
                f"{same_address_min_ok:.0%}), the rest a quick refusal, none timed out",
                v,
            )
        else:
            # A fresh connection may rarely be reset while the slot table evicts under
            # 1,100 hostile connections (seen: 2 of 140 with the default limits); the client
            # retries it at once. Never a timeout, never a refusal.
            timeouts = sum(n for s, n in v["statuses"].items() if "timeout" in s.lower())
            check(
                ok_share >= other_min_ok and timeouts == 0,
                f"{name}: the victim from the {k}: {ok_share:.0%} got 200 (at least "
                f"{other_min_ok:.0%}), the rest a quick refusal, none timed out",
                v,
            )


# ---- parts ------------------------------------------------------------------------------


def part_cleanup_start(binary, work):
    section("abandoned uploads (started now, checked at the end)")
    data = os.path.join(work, "cleanup")
    srv = Server(
        binary,
        data,
        os.path.join(work, "cleanup.log"),
        {
            "ATCR_REGISTRY_UPLOAD_IDLE_MINUTES": "1",
            "ATCR_REGISTRY_UPLOAD_CLEANUP_SECS": "2",
            "ATCR_REGISTRY_MAX_UPLOADS_PER_IDENTITY": "5",
        },
    )
    srv.start()
    locations = []
    for n in range(5):
        st, h, _ = request(srv.addr, "POST", "/v2/alice/app/blobs/uploads/", body=b"")
        locations.append(h.get("location"))
        if n % 2 == 0 and st == 202:
            st2, _, _ = request(srv.addr, "PATCH", h["location"], body=os.urandom(300_000))
            check(st2 == 202, f"abandoned upload {n} got 300 kB of bytes", st2)
    check(len(staged_entries(data)) == 5, "5 abandoned sessions are staged", staged_entries(data))
    st, h, body = request(srv.addr, "POST", "/v2/alice/app/blobs/uploads/", body=b"")
    check(
        st == 429 and b"TOOMANYREQUESTS" in body and h.get("retry-after") == "30",
        "the 6th session of one identity is refused: 429 TOOMANYREQUESTS, Retry-After: 30",
        (st, h, body),
    )
    return srv, locations, time.time()


def part_cleanup_finish(srv, locations, started):
    section("abandoned uploads: after the idle expiry")
    # Idle 1 minute; the sweep runs every 2 s and expires sessions idle for over a minute.
    wait = started + 66 - time.time()
    if wait > 0:
        print(f"  waiting {wait:.0f} s for the idle expiry", flush=True)
        time.sleep(wait)
    deadline = time.time() + 10
    while staged_entries(srv.data_dir) and time.time() < deadline:
        time.sleep(0.5)
    check(
        not staged_entries(srv.data_dir),
        "every abandoned upload's staged data is gone",
        staged_entries(srv.data_dir),
    )
    gone = [request(srv.addr, "GET", loc)[0] for loc in locations if loc]
    check(gone == [404] * 5, "the abandoned sessions are unknown (404)", gone)
    st = request(srv.addr, "POST", "/v2/alice/app/blobs/uploads/", body=b"")[0]
    check(st == 202, "the identity may open uploads again", st)
    log = open(srv.log_path).read()
    check("removed expired upload sessions" in log, "the server logged the cleanup")
    srv.stop()


def part_idle(binary, work):
    section(f"idle-connection flood: {HOSTILE} connections (silent / HTTP/2 preface / trickled headers)")
    srv = Server(
        binary,
        os.path.join(work, "idle"),
        os.path.join(work, "idle.log"),
        {"ATCR_SERVER_PER_ADDRESS_EXEMPT": ""},
    )
    srv.start()
    results, control, flood, _ = run_flood("idle", srv, idle_behaviour)
    assert_victims("idle", results, control, 0.95)
    check(
        flood.closed_by_server >= HOSTILE,
        f"the server closed the quiet connections itself ({flood.closed_by_server} closes)",
    )
    check(srv.proc.poll() is None, "the server is still running")
    srv.stop()

    # The literal repro: default limits (loopback exempt from the per-address share,
    # 1,024 slots), victim on the attacker's own address.
    section(f"idle-connection flood with the default config: {HOSTILE} connections on 1,024 slots")
    srv = Server(binary, os.path.join(work, "idle2"), os.path.join(work, "idle2.log"))
    srv.start()
    results, control, flood, _ = run_flood("idle (defaults)", srv, idle_behaviour)
    assert_victims("idle (defaults)", results, control, 0.95)
    srv.stop()


def part_slow_body(binary, work):
    section(f"slow-body flood: {HOSTILE} uploads and login forms at 1 byte / 5 s")
    data = os.path.join(work, "slow")
    srv = Server(binary, data, os.path.join(work, "slow.log"), {"ATCR_SERVER_PER_ADDRESS_EXEMPT": ""})
    srv.start()
    steady_data = os.urandom(24 * 1024)

    def steady():
        # 2 KiB/s (the default floor is 1 KiB/s), from a third address, during the flood.
        time.sleep(1)
        s = socket.create_connection(srv.addr, timeout=30, source_address=("127.0.0.3", 0))
        head = (
            f"POST /v2/steady/app/blobs/uploads/?digest={sha256(steady_data)} HTTP/1.1\r\n"
            f"Host: x\r\nContent-Length: {len(steady_data)}\r\n\r\n"
        ).encode()
        s.sendall(head)
        t = time.time()
        for i in range(0, len(steady_data), 1024):
            s.sendall(steady_data[i : i + 1024])
            time.sleep(0.5)
        resp = s.recv(4096)
        s.close()
        return {"status": parse_status(resp), "secs": time.time() - t}

    results, control, flood, steady_result = run_flood("slow-body", srv, slow_body_behaviour, steady)
    # Same address as 1,100 slow uploads: its share is mostly busy; the victim must still get
    # through regularly and never wait (measured 28-44% 200s, the rest quick 503s).
    assert_victims("slow-body", results, control, 0.15)
    check(
        steady_result.get("status") == 201,
        f"a slow-but-steady upload (24 KiB at 2 KiB/s, {steady_result.get('secs', 0):.0f} s) succeeded during the flood",
        steady_result,
    )
    st, _, body = request(srv.addr, "GET", f"/v2/steady/app/blobs/{sha256(steady_data)}")
    check(st == 200 and body == steady_data, "and reads back byte-exact")
    check(
        flood.answers.get(408, 0) > 0,
        f"slow bodies were cut off with 408 ({flood.answers.get(408, 0)} times)",
        flood.answers,
    )
    deadline = time.time() + 15
    while staged_entries(data) and time.time() < deadline:
        time.sleep(0.5)
    check(not staged_entries(data), "no hostile upload left staged data behind", staged_entries(data)[:5])
    check(srv.proc.poll() is None, "the server is still running")
    srv.stop()

    # The literal case: default limits (loopback exempt from the per-address share,
    # 1,024 slots for 1,100 slow uploads), victims on the attacker's address too.
    section(f"slow-body flood with the default config: {HOSTILE} uploads on 1,024 slots")
    data = os.path.join(work, "slow2")
    srv = Server(binary, data, os.path.join(work, "slow2.log"))
    srv.start()
    results, control, flood, _ = run_flood("slow-body (defaults)", srv, slow_body_behaviour)
    # With the default limits 1,100 slow uploads overflow max_connections (1,024) and no
    # connection is idle enough to evict at once: a few fresh connections from anyone get a
    # quick 503 (measured 0-6%), never a wait.
    assert_victims("slow-body (defaults)", results, control, 0.15, other_min_ok=0.8)
    deadline = time.time() + 15
    while staged_entries(data) and time.time() < deadline:
        time.sleep(0.5)
    check(not staged_entries(data), "no hostile upload left staged data behind", staged_entries(data)[:5])
    srv.stop()


def blob_files_consistent(data_dir):
    """Every committed blob file hashes to its path's digest. Returns the bad ones."""
    bad_files = []
    root = os.path.join(data_dir, "blobs", "blobs", "sha256")
    if not os.path.isdir(root):
        return bad_files
    for prefix in os.listdir(root):
        for hexd in os.listdir(os.path.join(root, prefix)):
            p = os.path.join(root, prefix, hexd, "data")
            if os.path.exists(p):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                if h.hexdigest() != hexd:
                    bad_files.append(p)
    return bad_files


def part_kill9(binary, work):
    section(f"kill -9 during concurrent chunked uploads and manifest bursts: {KILL_ROUNDS} rounds")
    data = os.path.join(work, "kill9")
    srv = Server(binary, data, os.path.join(work, "kill9.log"))
    acked_blobs = {}  # digest -> (repo, bytes)
    acked_manifests = {}  # digest -> (repo, bytes)
    attempted = {}  # digest -> (repo, bytes) of blobs in flight
    lock = threading.Lock()
    rng = random.Random(14)
    for rnd in range(KILL_ROUNDS):
        srv.start()
        stop = threading.Event()

        def uploader(k):
            while not stop.is_set():
                blob = os.urandom(rng.randint(256 * 1024, 3 * 1024 * 1024))
                d = sha256(blob)
                repo = f"crash/up{k}"
                with lock:
                    attempted[d] = (repo, blob)
                try:
                    st = chunked_push(srv.addr, repo, blob, 256 * 1024)
                except OSError:
                    return
                if st == 201:
                    with lock:
                        acked_blobs[d] = (repo, blob)

        def burster(k):
            repo = f"crash/img{k}"
            cfg = json.dumps({"round": rnd, "k": k}).encode()
            layer = os.urandom(4096)
            try:
                if push_blob(srv.addr, repo, cfg)[0] != 201 or push_blob(srv.addr, repo, layer)[0] != 201:
                    return
                with lock:
                    acked_blobs[sha256(cfg)] = (repo, cfg)
                    acked_blobs[sha256(layer)] = (repo, layer)
                n = 0
                while not stop.is_set():
                    m = manifest_for(sha256(cfg), len(cfg), [(sha256(layer), len(layer))])
                    m = m[:-1] + f',"annotations":{{"n":"{rnd}-{k}-{n}"}}}}'.encode()
                    st = put_manifest(srv.addr, repo, f"t{n % 3}", m)
                    if st == 201:
                        with lock:
                            acked_manifests[sha256(m)] = (repo, m)
                    n += 1
            except OSError:
                return

        threads = [threading.Thread(target=uploader, args=(k,)) for k in range(6)]
        threads += [threading.Thread(target=burster, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(1.5, 3.0))
        srv.kill9()
        stop.set()
        for t in threads:
            t.join(30)
        srv.start()
        with lock:
            blobs = dict(acked_blobs)
            manifests = dict(acked_manifests)
            inflight = {d: v for d, v in attempted.items() if d not in acked_blobs}
        bad_blobs = []
        for d, (repo, blob) in blobs.items():
            st, _, body = request(srv.addr, "GET", f"/v2/{repo}/blobs/{d}", timeout=30)
            if st != 200 or body != blob:
                bad_blobs.append((d, st, len(body)))
        check(not bad_blobs, f"round {rnd + 1}: all {len(blobs)} acknowledged blobs are byte-exact", bad_blobs[:5])
        bad_m = []
        for d, (repo, m) in manifests.items():
            st, _, body = request(srv.addr, "GET", f"/v2/{repo}/manifests/{d}")
            if st != 200 or body != m:
                bad_m.append((d, st))
        check(not bad_m, f"round {rnd + 1}: all {len(manifests)} acknowledged manifests are byte-exact", bad_m[:5])
        torn = []
        for d, (repo, blob) in inflight.items():
            st, _, body = request(srv.addr, "GET", f"/v2/{repo}/blobs/{d}", timeout=30)
            if st == 200 and body != blob:
                torn.append(d)
            elif st not in (200, 404):
                torn.append((d, st))
        check(not torn, f"round {rnd + 1}: none of {len(inflight)} interrupted uploads is visible half-written", torn[:5])
        tags_ok = True
        for k in range(2):
            for n in range(3):
                st, h, body = request(srv.addr, "GET", f"/v2/crash/img{k}/manifests/t{n}")
                if st == 200 and sha256(body) != h.get("docker-content-digest"):
                    tags_ok = False
        check(tags_ok, f"round {rnd + 1}: every tag serves a manifest matching its digest")
        bad_files = blob_files_consistent(data)
        check(not bad_files, f"round {rnd + 1}: every blob file on disk hashes to its name", bad_files[:5])
        srv.stop()
    REPORT.append(
        f"kill -9: {KILL_ROUNDS} rounds, {len(acked_blobs)} acknowledged blobs and "
        f"{len(acked_manifests)} manifests byte-exact after restarts"
    )


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip()


def fill(path, leave_bytes):
    """Create a ballast file leaving about `leave_bytes` free on the filesystem of `path`."""
    st = os.statvfs(os.path.dirname(path))
    free = st.f_bavail * st.f_frsize
    size = max(0, free - leave_bytes)
    with open(path, "wb") as f:
        block = b"\0" * (1 << 20)
        while size > 0:
            n = min(size, len(block))
            try:
                f.write(block[:n])
                f.flush()
            except OSError:
                break
            size -= n
    return size


def free_mib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / (1 << 20)


def part_disk_full(binary, work):
    section("disk full: the data dir on a 64 MiB tmpfs")
    mnt = os.path.join(work, "tmpfs")
    mounted, why = mount_tmpfs(mnt, "64m")
    if not mounted:
        bad("mount a tmpfs (the disk-full part needs root)", why)
        return
    try:
        data = os.path.join(mnt, "data")
        env = {"ATCR_STORAGE_MIN_FREE_MIB": "0"}
        srv = Server(binary, data, os.path.join(work, "disk.log"), env)
        srv.start()
        layer = os.urandom(2 << 20)
        cfg = b'{"architecture":"amd64","os":"linux"}'
        st1, _ = push_blob(srv.addr, "alice/app", layer)
        st2, _ = push_blob(srv.addr, "alice/app", cfg)
        m = manifest_for(sha256(cfg), len(cfg), [(sha256(layer), len(layer))])
        st3 = put_manifest(srv.addr, "alice/app", "v1", m)
        check((st1, st2, st3) == (201, 201, 201), "an image is pushed while there is room", (st1, st2, st3))

        ballast = os.path.join(mnt, "ballast")
        fill(ballast, 6 << 20)
        print(f"  ballast written: {free_mib(mnt):.1f} MiB left", flush=True)
        big = os.urandom(16 << 20)
        st, h, body = send_reading(srv.addr, "POST", f"/v2/alice/app/blobs/uploads/?digest={sha256(big)}", big)
        shown = {k: v for k, v in h.items() if k in ("content-type", "retry-after", "connection")}
        print(f"  disk full answers: HTTP {st} {shown} {body.decode(errors='replace')}", flush=True)
        REPORT.append(f"disk full (ENOSPC, POST ?digest=): HTTP {st}, headers {shown}, body {body.decode(errors='replace')}")
        check(st == 507, "a monolithic upload that fills the disk gets 507 Insufficient Storage", (st, body))
        try:
            err = json.loads(body)["errors"][0]
        except (ValueError, KeyError, IndexError):
            err = {}
        check(
            err.get("code") == "UNAVAILABLE" and "insufficient storage" in err.get("message", ""),
            "code UNAVAILABLE, a message that names the cause",
            err,
        )
        check(h.get("retry-after") == "60", "Retry-After: 60", h)
        check(not staged_entries(data), "its staged data was removed at once", staged_entries(data))
        # A chunked upload that runs into the full disk: its session goes, bytes and all.
        st = chunked_push(srv.addr, "alice/app", big, 4 << 20)
        check(st == 507, "a chunked upload that fills the disk gets 507", st)
        check(not staged_entries(data), "its staged data was removed at once", staged_entries(data))
        st, _, body = request(srv.addr, "GET", f"/v2/alice/app/blobs/{sha256(layer)}")
        check(st == 200 and body == layer, "pulls go on: the layer is byte-exact")
        st, _, body = request(srv.addr, "GET", "/v2/alice/app/manifests/v1")
        check(st == 200 and body == m, "pulls go on: the manifest is byte-exact")

        # Completely full, then a restart.
        ballast2 = os.path.join(mnt, "ballast2")
        fill(ballast2, 0)
        print(f"  filled up: {free_mib(mnt):.2f} MiB left", flush=True)
        st, h, body = request(
            srv.addr, "POST", f"/v2/alice/app/blobs/uploads/?digest={sha256(b'x' * 100)}", body=b"x" * 100
        )
        check(st == 507, "with no byte left even a 100-byte upload gets 507", (st, body))
        srv.stop()
        try:
            srv.start()
            restarted = True
        except RuntimeError as e:
            restarted = False
            print(f"  {e}", flush=True)
        check(restarted, "the server restarts while the disk is full")
        if restarted:
            st, _, body = request(srv.addr, "GET", f"/v2/alice/app/blobs/{sha256(layer)}")
            check(st == 200 and body == layer, "after the restart pulls go on")
            st, _, body = request(srv.addr, "GET", "/v2/alice/app/manifests/v1")
            check(st == 200 and body == m, "after the restart the manifest is byte-exact")
            srv.stop()
        os.remove(ballast2)

        # The watermark: 8 MiB kept free; ~6 MiB free now, so uploads are refused before the
        # disk is full.
        srv.env["ATCR_STORAGE_MIN_FREE_MIB"] = "8"
        srv.start()
        small = os.urandom(1024)
        st, h, body = request(
            srv.addr, "POST", f"/v2/alice/app/blobs/uploads/?digest={sha256(small)}", body=small
        )
        print(f"  under the watermark: HTTP {st} retry-after={h.get('retry-after')} {body.decode(errors='replace')}", flush=True)
        REPORT.append(f"under the free-space watermark (POST ?digest=): HTTP {st}, body {body.decode(errors='replace')}")
        check(
            st == 507 and b"storage.min_free_mib" in body,
            f"under the 8 MiB watermark ({free_mib(mnt):.1f} MiB free) a 1 KiB upload is refused with 507",
            (st, body),
        )
        st = request(srv.addr, "POST", "/v2/alice/app/blobs/uploads/", body=b"")[0]
        check(st == 507, "so is a new chunked session", st)
        st, _, body = request(srv.addr, "GET", f"/v2/alice/app/blobs/{sha256(layer)}")
        check(st == 200 and body == layer, "pulls go on under the watermark")

        # Space freed: pushes work again.
        os.remove(ballast)
        print(f"  ballast removed: {free_mib(mnt):.1f} MiB free", flush=True)
        st, _ = push_blob(srv.addr, "alice/app", big)
        check(st == 201, "after space is freed the 16 MiB upload succeeds", st)
        st, _, body = request(srv.addr, "GET", f"/v2/alice/app/blobs/{sha256(big)}", timeout=30)
        check(st == 200 and body == big, "and reads back byte-exact")
        check(not blob_files_consistent(data), "every blob file on the tmpfs hashes to its name")
        srv.stop()
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--parts", default="cleanup,idle,slow-body,kill9,disk-full")
    args = ap.parse_args()
    parts = args.parts.split(",")
    started = time.time()
    cleanup = None
    timings = {}
    try:
        if "cleanup" in parts:
            cleanup = part_cleanup_start(args.bin, args.work)
        for name, fn in [
            ("idle", part_idle),
            ("slow-body", part_slow_body),
            ("kill9", part_kill9),
            ("disk-full", part_disk_full),
        ]:
            if name in parts:
                t = time.time()
                try:
                    fn(args.bin, args.work)
                except Exception as e:  # a part that breaks is a failure, the others still run
                    bad(f"{name} part raised {type(e).__name__}", e)
                timings[name] = time.time() - t
        if cleanup:
            t = time.time()
            part_cleanup_finish(*cleanup)
            timings["cleanup (wait)"] = time.time() - t
    finally:
        for p in STARTED:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    print("\n== report")
    for line in REPORT:
        print(f"  {line}")
    print("  part wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print(f"\n{RESULTS['pass']} passed, {RESULTS['fail']} failed in {time.time() - started:.0f} s")
    sys.exit(1 if RESULTS["fail"] else 0)


if __name__ == "__main__":
    main()
