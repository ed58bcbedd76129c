"""A private ketchd per module on the real image service with the local busybox base image (no
network), and helpers to build through its API from a directory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.engine.daemon import REPO
from tests.storage.conftest import KetchCLI as StorageKetchCLI
from tests.storage.conftest import docker_cli, dpy, ketchd  # noqa: F401 - the module's fixtures


class KetchCLI(StorageKetchCLI):
    """The storage suite's CLI wrapper, with stdin and a working directory."""

    def __call__(self, *args, check=True, timeout=180, text=True, input=None, cwd=REPO):
        r = subprocess.run([sys.executable, "-m", "ketch.cli.main", "-H", self.d.host, *args], capture_output=True,
                           text=text, env=self.env, timeout=timeout, cwd=cwd, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r


@pytest.fixture(scope="module")
def ketch(ketchd):  # noqa: F811 - the fixture imported above
    return KetchCLI(ketchd)


def write_tree(root, files: dict[str, str | bytes]) -> None:
    for name, data in files.items():
        p = os.path.join(root, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)


def context_tar(root) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in sorted(os.listdir(root)):
            tf.add(os.path.join(root, name), arcname=name)
    return buf.getvalue()


def api_build(d, root, timeout=300, **query) -> tuple[int, list[dict]]:
    """POST /build with ``root`` tarred as the body; (status, the JSON messages)."""
    from urllib.parse import urlencode
    q = []
    for k, v in query.items():
        for x in (v if isinstance(v, list) else [v]):
            q.append((k, json.dumps(x) if isinstance(x, dict) else str(x)))
    status, _, body = d.request("POST", "/build?" + urlencode(q), raw=context_tar(root),
                                headers={"Content-Type": "application/x-tar"}, timeout=timeout)
    if status != 200:
        return status, [json.loads(body)]
    return status, [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def stream_text(msgs: list[dict]) -> str:
    return "".join(m.get("stream", "") for m in msgs)


def built_id(msgs: list[dict]) -> str:
    ids = [m["aux"]["ID"] for m in msgs if "aux" in m and "ID" in m["aux"]]
    assert ids, msgs
    return ids[-1]
