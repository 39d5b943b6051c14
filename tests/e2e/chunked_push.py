#!/usr/bin/env python3
"""Push one blob with the OCI *chunked* upload flow and check each step.

    chunked_push.py HOST:PORT NAME FILE [CHUNK_BYTES]

POST (open a session), several PATCHes with Content-Range, a status GET and a deliberately
out-of-order PATCH in the middle (must be 416 with the true Range), then PUT ?digest= with
no body. Finally HEAD + GET the blob and compare size and sha256. skopeo and podman always
stream a blob in one PATCH, so this path is otherwise untested by real clients.
Prints one "ok <what>" / "FAIL <what>" line per check; exit status 1 if any failed.
REGISTRY_TOKEN (env) is sent as a Bearer token with every request.
"""

import hashlib
import os
import urllib.request
import http.client
import sys
import urllib.parse

failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures += 1
    return ok


def main():
    hostport, name, path = sys.argv[1:4]
    chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 7 * 1024 * 1024 + 123  # odd size on purpose
    with open(path, "rb") as f:
        data = f.read()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    conn = http.client.HTTPConnection(hostport, timeout=120)
    # REGISTRY_TOKEN: a registry bearer token (a registry with token auth).
    token = os.environ.get("REGISTRY_TOKEN", "")

    def req(method, url, body=None, headers=None):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = "Bearer " + token
        conn.request(method, url, body=body, headers=headers)
        r = conn.getresponse()
        payload = r.read()
        return r, payload

    def absolute(loc):
        # Location may be absolute (http://host/v2/...) or a path; keep path + query.
        u = urllib.parse.urlsplit(loc)
        return u.path + ("?" + u.query if u.query else "")

    r, _ = req("POST", "/v2/%s/blobs/uploads/" % name, headers={"Content-Length": "0"})
    if not check(r.status == 202 and r.getheader("Location"), "POST opens a session (status %d)" % r.status):
        return 1
    loc = absolute(r.getheader("Location"))

    off, n_patch = 0, 0
    while off < len(data):
        part = data[off:off + chunk]
        end = off + len(part) - 1
        r, body = req("PATCH", loc, body=part, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": "%d-%d" % (off, end),
            "Content-Length": str(len(part)),
        })
        n_patch += 1
        if not check(r.status == 202 and r.getheader("Range") == "0-%d" % end,
                     "PATCH #%d %d-%d -> %d Range=%s" % (n_patch, off, end, r.status, r.getheader("Range"))):
            print(body.decode(errors="replace")[:500])
            return 1
        loc = absolute(r.getheader("Location") or loc)
        off = end + 1

        if n_patch == 2:
            # Status of the open session: 204 and the bytes received so far.
            r, _ = req("GET", loc)
            check(r.status == 204 and r.getheader("Range") == "0-%d" % end,
                  "GET upload status -> %d Range=%s" % (r.status, r.getheader("Range")))
            # A chunk that skips ahead must be refused with 416 and the true Range.
            if off + 10 < len(data):
                bad = data[off + 10:off + 20]
                r, _ = req("PATCH", loc, body=bad, headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": "%d-%d" % (off + 10, off + 19),
                    "Content-Length": str(len(bad)),
                })
                check(r.status == 416 and r.getheader("Range") == "0-%d" % end,
                      "out-of-order PATCH -> %d Range=%s" % (r.status, r.getheader("Range")))
                # The server answers before reading the body and may then close the
                # connection (hyper does, racily, without `Connection: close`): start a
                # fresh one, as a real client would after an error.
                conn.close()

    check(n_patch >= 3, "blob went up in %d chunks" % n_patch)
    sep = "&" if "?" in loc else "?"
    r, body = req("PUT", loc + sep + "digest=" + urllib.parse.quote(digest), body=b"", headers={"Content-Length": "0"})
    check(r.status == 201 and r.getheader("Docker-Content-Digest") == digest,
          "PUT ?digest= commits (status %d)" % r.status) or print(body.decode(errors="replace")[:500])

    r, _ = req("HEAD", "/v2/%s/blobs/%s" % (name, digest))
    check(r.status == 200 and r.getheader("Content-Length") == str(len(data)),
          "HEAD blob -> %d Content-Length=%s" % (r.status, r.getheader("Content-Length")))
    r, body = req("GET", "/v2/%s/blobs/%s" % (name, digest))
    if r.status == 307:
        # Object storage backend: the bytes come from the presigned URL, not the registry.
        with urllib.request.urlopen(r.getheader("Location"), timeout=120) as direct:
            body = direct.read()
            r.status = direct.status
    got = "sha256:" + hashlib.sha256(body).hexdigest()
    check(r.status == 200 and got == digest, "GET blob sha256 matches (%d bytes)" % len(body))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
