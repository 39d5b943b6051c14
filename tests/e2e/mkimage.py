#!/usr/bin/env python3
"""Write a hand-made OCI image layout, offline, for the end-to-end scripts.

    mkimage.py OUT TAG --layers 4096,65536            single-platform image (amd64)
    mkimage.py OUT TAG --layers 4096 --platforms amd64,arm64   image index, one manifest each
    mkimage.py OUT TAG --layers 8192 --blob-from FILE          first layer holds FILE's bytes

Layers are gzip tarballs of random bytes (gzip, not plain tar: containers/image compresses
plain layers on push to a registry, which would change their digests and defeat the
byte-for-byte comparison). Each platform gets one shared layer plus one of its own, so an
index push also exercises the "blob already exists" path. Prints the top-level digest.
"""

import argparse
import gzip
import hashlib
import json
import os
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
CREATED = "2024-01-01T00:00:00Z"


class HashWriter:
    """A write-only file that hashes everything passing through it."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()

    def write(self, b):
        self.h.update(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


class Layout:
    def __init__(self, root):
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def put_bytes(self, data, media_type):
        hexd = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, hexd), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + hexd, "size": len(data)}

    def put_json(self, obj, media_type):
        # Fixed formatting: these exact bytes are what the registry must hand back.
        return self.put_bytes(json.dumps(obj, indent=2, sort_keys=True).encode(), media_type)

    def layer(self, size, label, source=None):
        """A gzip tarball holding one file of `size` random bytes (or `source`'s bytes).

        One streaming pass: tar -> (sha256 = diff_id) -> gzip -> (sha256 = digest) -> file.
        Big layers use gzip level 0 (stored blocks): still valid gzip, and random data
        would not compress anyway, so generating 200 MB takes ~1 s instead of ~10 s.
        """
        tmp_path = os.path.join(self.blobs, ".tmp-%s" % label)
        level = 0 if size > (4 << 20) or source else 6
        with open(tmp_path, "wb") as raw:
            gz_sink = HashWriter(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=gz_sink, compresslevel=level, mtime=0) as gz:
                tar_sink = HashWriter(gz)
                with tarfile.open(fileobj=tar_sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    info = tarfile.TarInfo("data/%s.bin" % label)
                    info.mtime = 0
                    info.mode = 0o644
                    if source:
                        info.size = os.path.getsize(source)
                        with open(source, "rb") as src:
                            tar.addfile(info, src)
                    else:
                        info.size = size
                        with open("/dev/urandom", "rb") as rnd:
                            tar.addfile(info, rnd)
        hexd = gz_sink.h.hexdigest()
        dest = os.path.join(self.blobs, hexd)
        os.replace(tmp_path, dest)
        desc = {"mediaType": OCI_LAYER_GZ, "digest": "sha256:" + hexd, "size": os.path.getsize(dest)}
        return desc, "sha256:" + tar_sink.h.hexdigest()

    def image(self, arch, layers):
        """layers: list of (descriptor, diff_id). Returns the manifest descriptor."""
        config = {
            "created": CREATED,
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/data"]},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "history": [{"created": CREATED, "created_by": "e2e layer %d" % i} for i in range(len(layers))],
        }
        cdesc = self.put_json(config, OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": cdesc,
            "layers": [d for d, _ in layers],
            "annotations": {"org.opencontainers.image.created": CREATED, "io.atcr.e2e.arch": arch},
        }
        return self.put_json(manifest, OCI_MANIFEST)

    def tag(self, desc, tag):
        entry = dict(desc)
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("tag")
    ap.add_argument("--layers", default="4096", help="comma-separated layer sizes in bytes")
    ap.add_argument("--platforms", default="", help="e.g. amd64,arm64: write an image index")
    ap.add_argument("--blob-from", default=None, help="the first layer's tarball holds this file")
    args = ap.parse_args()

    lay = Layout(args.out)
    sizes = [int(s) for s in args.layers.split(",") if s]
    if not args.platforms:
        layers = []
        for i, size in enumerate(sizes):
            src = args.blob_from if (i == 0 and args.blob_from) else None
            layers.append(lay.layer(size, "l%d" % i, src))
        top = lay.image("amd64", layers)
    else:
        shared = lay.layer(sizes[0], "shared")
        children = []
        for arch in args.platforms.split(","):
            own = [lay.layer(s, "%s-%d" % (arch, i)) for i, s in enumerate(sizes)]
            desc = lay.image(arch, [shared] + own)
            desc["platform"] = {"architecture": arch, "os": "linux"}
            children.append(desc)
        top = lay.put_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}, OCI_INDEX)
    lay.tag(top, args.tag)
    print(top["digest"])


if __name__ == "__main__":
    sys.exit(main())
