#!/usr/bin/env python3
"""Write an OCI image layout with the scanner's test images, from tests/fixtures/scan/:

    mkimage.py OUT

tag `alpine` (an Alpine 3.19 root: os-release + /lib/apk/db/installed) and tag `debian`
(a Debian 12 root in two layers: the dpkg database, copyright files and python3-six, then
an upgrade of libexpat1 and the purge of tzdata with a whiteout). Gzip layers with fixed
timestamps, so the digests are the same on every run. Prints the two manifest digests.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
FX = os.path.join(HERE, "..", "fixtures", "scan")


def fx(rel):
    with open(os.path.join(FX, rel), "rb") as f:
        return f.read()


def layer(entries):
    """entries: (path, bytes | ("symlink", target)). A gzip tarball."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, data in entries:
            info = tarfile.TarInfo(path)
            info.mtime = 1704067200
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = data[1]
                t.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as g:
        g.write(raw.getvalue())
    return out.getvalue()


def main():
    root = sys.argv[1]
    blobs = os.path.join(root, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data, media_type):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + d, "size": len(data)}

    def image(layers):
        ls = [put(l, "application/vnd.oci.image.layer.v1.tar+gzip") for l in layers]
        cfg = put(json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created_by": "/bin/sh -c #(nop) ADD file in /"} for _ in layers],
        }, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
        return put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": cfg, "layers": ls}, sort_keys=True).encode(),
                   "application/vnd.oci.image.manifest.v1+json")

    alpine = image([layer([("etc/os-release", fx("alpine/os-release")), ("lib/apk/db/installed", fx("alpine/installed"))])])
    bc = fx("debian/base-files.copyright")
    debian = image([
        layer([
            ("etc/os-release", ("symlink", "../usr/lib/os-release")),
            ("usr/lib/os-release", fx("debian/os-release")),
            ("var/lib/dpkg/status", fx("debian/status.base")),
            ("var/lib/dpkg/info/python3-six.list", fx("debian/python3-six.list")),
            ("usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO", fx("debian/six.PKG-INFO")),
            ("usr/share/doc/zlib1g/copyright", fx("debian/zlib1g.copyright")),
            ("usr/share/doc/libexpat1/copyright", fx("debian/libexpat1.copyright")),
            ("usr/share/doc/base-files/copyright", bc),
            ("usr/share/doc/tzdata/copyright", bc),
        ]),
        layer([("var/lib/dpkg/status", fx("debian/status")), ("usr/share/doc/.wh.tzdata", b"")]),
    ])
    for d, tag in ((alpine, "alpine"), (debian, "debian")):
        d["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [alpine, debian]}, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(alpine["digest"], debian["digest"])


if __name__ == "__main__":
    main()
