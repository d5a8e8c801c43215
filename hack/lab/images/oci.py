#!/usr/bin/env python3
"""Write a one-binary container image as an OCI image layout archive (no Docker, no registry).

    python3 oci.py --binary memhog --name lab.oomtuner.dev/memhog:v1 --out memhog.tar

The archive holds `oci-layout`, `index.json` and `blobs/sha256/…`: one gzipped layer with the
binary at `/<its file name>` and the empty directories a runtime mounts over (dev, proc, sys, etc,
tmp), an image config whose entrypoint is that binary, and a manifest. Each `--name` becomes a
descriptor in `index.json` annotated with `io.containerd.image.name`, the name `ctr images import`
(and `kind load image-archive`) gives the image. Every timestamp is zero and every owner root, so the
same binary always gives the same archive and image ID. Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import pathlib
import sys
import tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY_DIRS = {"dev": 0o755, "etc": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777}


def _entry(name: str, *, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.mtime = info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def layer_tar(binary: pathlib.Path) -> bytes:
    """The uncompressed layer: the empty directories, then the binary, in a fixed order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in sorted(EMPTY_DIRS.items()):
            tar.addfile(_entry(name, kind=tarfile.DIRTYPE, mode=mode))
        data = binary.read_bytes()
        tar.addfile(_entry(binary.name, kind=tarfile.REGTYPE, mode=0o755, size=len(data)), io.BytesIO(data))
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def image_blobs(binary: pathlib.Path, *, arch: str, args: list[str]) -> tuple[dict[str, bytes], dict[str, object]]:
    """The blobs by digest, and the manifest's descriptor (without annotations)."""
    tar = layer_tar(binary)
    layer = gzip.compress(tar, compresslevel=9, mtime=0)
    config = _json({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": [f"/{binary.name}"], "Cmd": args, "Env": ["PATH=/"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(tar)]},
        "history": [{"created_by": f"hack/lab/images/oci.py --binary {binary.name}"}],
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": _digest(layer), "size": len(layer)}],
    })
    blobs = {_digest(blob): blob for blob in (layer, config, manifest)}
    descriptor = {"mediaType": MANIFEST, "digest": _digest(manifest), "size": len(manifest),
                  "platform": {"architecture": arch, "os": "linux"}}
    return blobs, descriptor


def write_archive(out: pathlib.Path, *, binary: pathlib.Path, names: list[str], arch: str, args: list[str]) -> str:
    """Write the archive; return the image's config digest (its ID in containerd)."""
    blobs, descriptor = image_blobs(binary, arch=arch, args=args)
    index = _json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**descriptor, "annotations": {"io.containerd.image.name": name,
                                           "org.opencontainers.image.ref.name": name.rpartition(":")[2]}}
            for name in names
        ],
    })
    files = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}), "index.json": index}
    files.update({f"blobs/sha256/{digest.removeprefix('sha256:')}": blob for digest, blob in sorted(blobs.items())})
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_entry(directory, kind=tarfile.DIRTYPE, mode=0o755))
        for name, data in files.items():
            tar.addfile(_entry(name, kind=tarfile.REGTYPE, mode=0o644, size=len(data)), io.BytesIO(data))
    tmp.replace(out)
    manifest = json.loads(blobs[str(descriptor["digest"])])
    return str(manifest["config"]["digest"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=pathlib.Path, required=True, help="static executable, the entrypoint")
    parser.add_argument("--name", action="append", required=True, help="image name, e.g. lab.oomtuner.dev/memhog:v1")
    parser.add_argument("--arch", default="amd64", help="GOARCH of the binary")
    parser.add_argument("--arg", action="append", default=[], help="default argument (the image's Cmd)")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    options = parser.parse_args(argv)
    if not options.binary.is_file():
        parser.error(f"--binary {options.binary}: no such file")
    for name in options.name:
        if ":" not in name.rpartition("/")[2]:
            parser.error(f"--name {name}: needs a tag (name:tag)")
    image_id = write_archive(options.out, binary=options.binary, names=options.name, arch=options.arch, args=options.arg)
    print(f"{options.out}: {', '.join(options.name)} ({image_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
