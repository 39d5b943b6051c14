#!/usr/bin/env python3
"""Memory per upload in flight: atcr vs distribution, one run, one table.

Driven by benches/upload-memory.sh (which builds atcr, starts the servers and passes their
PIDs and URLs). For each server and scenario it:
  1. waits for the server to settle and reads its idle RSS (median of 1 s of samples);
  2. runs the scenario's pushes at once, each with curl: POST, one streaming PATCH of the
     whole blob (-T streams from the file, nothing buffered in the client), PUT ?digest=;
  3. samples the server's VmRSS every 10 ms from /proc meanwhile: the peak over idle is the
     memory the uploads cost, divided by the uploads in flight: the cost per upload;
  The hold API rows push the same way through `io.atcr.hold.initiateUpload` / one streaming
  `uploadPart` / `completeUpload` with ES256 service tokens of a bench user (the hold's
  owner, its DID document served as a PLC directory by the shell script).
  4. after the last PUT, measures how long RSS takes to come back within 2 MiB of idle
     (capped at SETTLE_MAX seconds), and what is left then: anonymous memory (heap,
     stacks) apart from file pages (code paged in by a path's first run).
Every blob is random (a fresh digest per push) so nothing is short-circuited by dedup.
"""
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

SCENARIOS = os.environ.get("SCENARIOS", "4x500,1x200").split(",")
SETTLE_MAX = float(os.environ.get("SETTLE_MAX", "30"))
TMP = os.environ.get("BENCH_TMP", "")
SERVERS = json.loads(os.environ.get("BENCH_SERVERS", "[]"))  # [{"name","pid","url","hold_api"?}]


# --- the hold API (io.atcr.hold.*): a user with a P-256 key, service tokens as a PDS mints -----
BENCH_DID = "did:plc:benchbenchbenchbenchbenc"
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(data):
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def make_identity(plc_dir, key_path):
    """The bench user's DID document (served as a PLC directory) and private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.CompressedPoint)
    doc = {"id": BENCH_DID, "alsoKnownAs": [],
           "verificationMethod": [{"id": BENCH_DID + "#atproto", "type": "Multikey",
                                   "controller": BENCH_DID,
                                   "publicKeyMultibase": "z" + b58(b"\x80\x24" + point)}],
           "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                        "serviceEndpoint": "http://127.0.0.1:9"}]}
    os.makedirs(plc_dir, exist_ok=True)
    with open(os.path.join(plc_dir, BENCH_DID), "w") as f:
        json.dump(doc, f)
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def service_token(key_path, aud, lxm):
    """An ES256 service token (low-S, r||s), as the user's PDS would mint it."""
    import base64
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    now = int(time.time())
    head = enc(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    body = enc(json.dumps({"iss": BENCH_DID, "aud": aud, "exp": now + 120, "iat": now,
                           "lxm": lxm, "jti": os.urandom(8).hex()}).encode())
    r, sv = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    sv = min(sv, P256_N - sv)
    return f"{head}.{body}.{enc(r.to_bytes(32, 'big') + sv.to_bytes(32, 'big'))}"


def push_hold(base, path, digest, errors):
    """initiateUpload, one streaming uploadPart of the whole blob, completeUpload."""
    try:
        with urllib.request.urlopen(base + "/.well-known/did.json") as r:
            aud = json.load(r)["id"]
        key = os.path.join(TMP, "hold-key.pem")

        def call(nsid, payload):
            req = urllib.request.Request(
                f"{base}/xrpc/{nsid}", data=json.dumps(payload).encode(), method="POST",
                headers={"Content-Type": "application/json",
                         "Authorization": "Bearer " + service_token(key, aud, nsid)})
            with urllib.request.urlopen(req) as r:
                return json.load(r)
        upload = call("io.atcr.hold.initiateUpload", {"digest": digest})["uploadId"]
        nsid = "io.atcr.hold.uploadPart"
        out = subprocess.run(["curl", "-fsS", "-X", "PUT", "-T", path,
                              "-H", "Content-Type: application/octet-stream",
                              "-H", f"X-Upload-Id: {upload}", "-H", "X-Part-Number: 1",
                              "-H", "Authorization: Bearer " + service_token(key, aud, nsid),
                              f"{base}/xrpc/{nsid}"], check=True, capture_output=True, text=True)
        etag = json.loads(out.stdout)["etag"]
        call("io.atcr.hold.completeUpload", {"uploadId": upload, "digest": digest,
                                             "parts": [{"partNumber": 1, "etag": etag}]})
    except Exception as e:  # noqa: BLE001 - reported in the table
        errors.append(repr(e))


def rss_parts(pid):
    """(RssAnon, RssFile) in KiB: heap and stacks vs mapped file pages (the binary's code)."""
    parts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                parts[line.split(":")[0]] = int(line.split()[1])
    return parts.get("RssAnon", 0), parts.get("RssFile", 0)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_flag = pid, 0, False

    def run(self):
        while not self.stop_flag:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)


def idle_rss(pid, secs=1.0):
    samples = []
    end = time.time() + secs
    while time.time() < end:
        samples.append(rss_kib(pid))
        time.sleep(0.02)
    samples.sort()
    return samples[len(samples) // 2]


def make_blob(path, mb):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = mb * 1_000_000
        while left:
            n = min(left, 4 << 20)
            chunk = os.urandom(n)
            h.update(chunk)
            f.write(chunk)
            left -= n
    return "sha256:" + h.hexdigest()


def curl_headers(args):
    out = subprocess.run(["curl", "-fsS", "-D", "-", "-o", "/dev/null"] + args,
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.lower().startswith("location:"):
            return line.split(":", 1)[1].strip()
    return None


def push(base, repo, path, digest, errors):
    try:
        loc = curl_headers(["-X", "POST", f"{base}/v2/{repo}/blobs/uploads/"])
        loc = loc if loc.startswith("http") else base + loc
        loc = curl_headers(["-X", "PATCH", "-H", "Content-Type: application/octet-stream",
                            "-T", path, loc])
        loc = loc if loc.startswith("http") else base + loc
        sep = "&" if "?" in loc else "?"
        subprocess.run(["curl", "-fsS", "-X", "PUT", "-o", "/dev/null", f"{loc}{sep}digest={digest}"],
                       check=True)
    except Exception as e:  # noqa: BLE001 - reported in the table
        errors.append(repr(e))


def run(server, count, mb, blobs):
    pid, base = server["pid"], server["url"]
    time.sleep(1.0)
    idle = idle_rss(pid)
    idle_parts = rss_parts(pid)
    sampler = Sampler(pid)
    sampler.start()
    errors = []
    t0 = time.time()
    if server.get("via") == "hold":
        threads = [threading.Thread(target=push_hold, args=(base, p, d, errors)) for p, d in blobs[:count]]
    else:
        threads = [threading.Thread(target=push, args=(base, "bench/mem", p, d, errors))
                   for p, d in blobs[:count]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.time() - t0
    sampler.stop_flag = True
    sampler.join()
    settle_t0 = time.time()
    settled = settled_anon = None
    while time.time() - settle_t0 < SETTLE_MAX:
        now = time.time() - settle_t0
        if settled_anon is None and rss_parts(pid)[0] <= idle_parts[0] + 2048:
            settled_anon = now
        if rss_kib(pid) <= idle + 2048:
            settled = now
            settled_anon = settled_anon if settled_anon is not None else now
            break
        time.sleep(0.05)
    after = rss_kib(pid)
    after_parts = rss_parts(pid)
    return {
        "left_anon": after_parts[0] - idle_parts[0], "left_file": after_parts[1] - idle_parts[1],
        "idle": idle, "peak": sampler.peak, "over": sampler.peak - idle,
        "per": (sampler.peak - idle) / count, "mbps": count * mb / secs,
        "settle": settled, "settle_anon": settled_anon, "after": after, "errors": errors,
    }


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--make-identity":
        make_identity(sys.argv[2], sys.argv[3])
        print(BENCH_DID)
        return
    # The hold API rows run on the same atcr process, after its registry rows.
    servers = []
    for server in SERVERS:
        servers.append(server)
        if server.get("hold_api"):
            servers.append(dict(server, name=server["name"] + " hold API", via="hold"))
    print(f"machine: {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // (1 << 30)} GiB RAM")
    rows = []
    for sc in SCENARIOS:
        count, mb = (int(x) for x in sc.split("x"))
        # fresh random blobs per scenario and server: no dedup between servers either
        for server in servers:
            blobs = []
            for i in range(count):
                p = os.path.join(TMP, f"blob-{server['name']}-{sc}-{i}")
                blobs.append((p, make_blob(p, mb)))
            r = run(server, count, mb, blobs)
            for p, _ in blobs:
                os.unlink(p)
            rows.append((server["name"], sc, r))
            print(f"  {server['name']:<22} {sc:>6}: idle {r['idle']/1024:.1f} MiB, peak {r['peak']/1024:.1f} MiB,"
                  f" {r['mbps']:.0f} MB/s, errors {len(r['errors'])}", flush=True)
    print()
    hdr = (f"{'server':<22} {'uploads':>8} {'idle MiB':>9} {'peak MiB':>9} {'over idle':>10}"
           f" {'per upload':>11} {'MB/s':>7} {'back to idle':>13} {'anon back':>10} {'left anon/file':>15}")
    print(hdr)
    print("-" * len(hdr))
    failed = False
    for name, sc, r in rows:
        settle = f"{r['settle']:.1f} s" if r["settle"] is not None else f">{SETTLE_MAX:.0f} s ({r['after']/1024:.0f})"
        anon_back = f"{r['settle_anon']:.1f} s" if r["settle_anon"] is not None else f">{SETTLE_MAX:.0f} s"
        print(f"{name:<22} {sc + ' MB':>8} {r['idle']/1024:>9.1f} {r['peak']/1024:>9.1f} {r['over']/1024:>9.1f}M"
              f" {r['per']/1024:>10.1f}M {r['mbps']:>7.0f} {settle:>13}"
              f" {anon_back:>10}"
              f" {r['left_anon']/1024:>+7.1f}/{r['left_file']/1024:+.1f}M")
        if r["errors"]:
            failed = True
            print(f"   errors: {r['errors'][:3]}")
    print("\nback to idle: VmRSS within 2 MiB of idle; anon back: the same for RssAnon alone (heap, stacks);"
          " left anon/file: RSS at the end minus idle, anonymous memory apart from file pages"
          " (the binary's code, paged in the first time a path runs: clean, shared, reclaimable)")
    print("goals (issue 17): <= 4 MiB per upload in flight; 4 x 500 MB <= 16 MiB over idle; "
          "back to idle (within 2 MiB) in <= 5 s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
