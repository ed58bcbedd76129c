"""A private ketchd per module on the real image service (busybox base image), for the real
docker CLI and the Docker SDK for Python. Reuses tests/engine/daemon.py's KetchDaemon."""

import subprocess
import sys

import pytest

from tests.engine.daemon import DOCKER, REPO, daemon_fixture


def _make_base(d):
    subprocess.run([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
                    "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))",
                    d.data_root], cwd=REPO, check=True, capture_output=True, timeout=120)


ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


@pytest.fixture(scope="module")
def docker_cli(ketchd):
    if not DOCKER:
        pytest.skip("the docker CLI is not installed")
    return ketchd.docker


@pytest.fixture
def registry(tmp_path):
    from tests.registry.conftest import start_registry
    reg = start_registry(tmp_path)
    yield reg
    reg.stop()
