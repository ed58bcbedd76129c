"""An image built by Ketch is an image like any other: pushed to the real docker-registry, pulled and run
by podman (its storage under temp dirs)."""

from __future__ import annotations

import pytest

from tests.images.test_interop import PODMAN_LIMITS, podman  # noqa: F401 - the fixture
from tests.registry.conftest import start_registry

from .conftest import write_tree


@pytest.fixture
def registry(tmp_path):
    reg = start_registry(tmp_path)
    yield reg
    reg.stop()


def test_ketch_built_image_pushed_runs_under_podman(ketch, registry, podman, tmp_path):  # noqa: F811
    ref = f"{registry.domain}/built/app:1"
    write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN mkdir -p /app && echo made-by-run > /app/run.txt\n"
                      "COPY greeting.txt /app/greeting.txt\n"
                      'CMD ["sh", "-c", "cat /app/run.txt /app/greeting.txt"]\n',
        "greeting.txt": "hello from ketch build\n"})
    ketch("build", "-q", "-t", ref, "--network", "none", str(tmp_path / "ctx"))
    assert "digest: sha256:" in ketch("push", ref).stdout
    podman("pull", "--tls-verify=false", ref)
    r = podman("run", "--rm", "--network=none", *PODMAN_LIMITS, ref)
    assert r.stdout.splitlines() == ["made-by-run", "hello from ketch build"]
    # the history and config survived the trip
    r = podman("image", "inspect", "--format", "{{json .Config.Cmd}}", ref)
    assert r.stdout.strip() == '["sh","-c","cat /app/run.txt /app/greeting.txt"]'
