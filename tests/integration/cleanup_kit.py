"""Images and build cache for the cleanup tests, made for real in the tests' own engine.

Creation time: Docker takes an image's ``Created`` from its config JSON, and
``POST /images/load`` (``docker load``) keeps that JSON as it is.  So
:func:`load_image` writes a docker-archive (``manifest.json``, config JSON,
one ``layer.tar`` per layer, the format ``docker save`` writes) with the
``created`` we choose, e.g. 2020-01-01: a real image, as old as we say,
with no clock faked.  Layers hold random bytes so each image's layer is its
own (``Size - SharedSize`` is then exactly what removing it frees).

Build cache: the docker SDK's ``images.build`` uses the classic builder,
whose cache is intermediate images, not BuildKit records (``docker system
df`` shows none).  dockerd 20.10 runs BuildKit for ``POST /build?version=2``
with a tar context in the request body, no client session needed, so
:func:`buildkit_build` sends that request through the SDK's HTTP session.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from typing import Any

import docker

from tests.integration.dockerd import TEST_IMAGE

OLD = "2020-01-01T00:00:00Z"


def tar_of(files: dict[str, bytes], *, mode: int = 0o644) -> bytes:
    """A deterministic tar (mtime 0) of ``{path: content}``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def random_layer(size: int, name: str = "blob") -> bytes:
    """A layer with one file of ``size`` random bytes (unique to this call)."""
    return tar_of({name: os.urandom(size)})


def busybox_layers(client: docker.DockerClient) -> list[bytes]:
    """The layer tars of the session's test image (so an image can run ``true``)."""
    data = b"".join(client.images.get(TEST_IMAGE).save())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return [tar.extractfile(p).read() for p in manifest[0]["Layers"]]  # type: ignore[union-attr]


def load_image(client: docker.DockerClient, *, tag: str | None, created: str,
               layers: list[bytes], labels: dict[str, str] | None = None) -> str:
    """Load an image with these layers and this ``created``; its id (``sha256:...``).

    ``tag=None`` loads it untagged: a dangling image.
    """
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = {"architecture": "amd64", "os": "linux", "created": created,
              "config": {"Labels": labels or {}, "Cmd": ["true"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created": created, "created_by": "cleanup_kit"} for _ in layers]}
    raw = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(raw).hexdigest() + ".json"
    files = {config_name: raw}
    for i, layer in enumerate(layers):
        files[f"l{i}/layer.tar"] = layer
    files["manifest.json"] = json.dumps([{"Config": config_name,
                                          "RepoTags": [tag] if tag else None,
                                          "Layers": [f"l{i}/layer.tar"
                                                     for i in range(len(layers))]}]).encode()
    client.images.load(tar_of(files))
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def buildkit_build(client: docker.DockerClient, tag: str, files: dict[str, bytes]) -> None:
    """Build ``tag`` with BuildKit (``POST /build?version=2``); raises on a build error."""
    api = client.api
    resp = api._post(api._url("/build"), params={"version": "2", "t": tag},  # type: ignore[attr-defined]
                     data=tar_of(files), headers={"Content-Type": "application/x-tar"},
                     stream=True)
    resp.raise_for_status()
    for line in resp.iter_lines():
        msg: dict[str, Any] = json.loads(line)
        if "error" in msg or "errorDetail" in msg:
            raise RuntimeError(f"BuildKit build of {tag} failed: {msg}")


def image_ids(client: docker.DockerClient) -> set[str]:
    """Ids of every top-level image (tagged or dangling)."""
    return {str(i["Id"]) for i in client.api.images(all=False)}


def build_cache_ids(client: docker.DockerClient) -> set[str]:
    return {str(r["ID"]) for r in client.df().get("BuildCache") or ()}
