"""What the engine expects of an ImageService, checked on every implementation:
tests/engine/dirimages.DirImageService and ketch.images.async_service.AsyncImageService."""

import asyncio
import os
import subprocess
import sys

import pytest

from ketch.engine.ports import ImageService
from ketch.errors import NotFound
from tests.engine.daemon import REPO


def _dir(root):
    from tests.engine.dirimages import DirImageService
    return DirImageService(root)


def _real(root):
    try:
        from ketch.images.async_service import AsyncImageService
    except ImportError:
        pytest.skip("ketch.images not present")
    subprocess.run([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
                    "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))",
                    root], cwd=REPO, check=True, capture_output=True, timeout=120)
    return AsyncImageService(root)


def _mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.fixture(params=["dir", "real"])
def service(request, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    svc = {"dir": _dir, "real": _real}[request.param](str(tmp_path / "root"))
    yield svc


def run(coro):
    return asyncio.run(coro)


def test_protocol_shape_and_lookup(service):
    assert isinstance(service, ImageService)
    img = run(service.get_image("busybox"))
    assert img.id.startswith("sha256:") and any(t.endswith("busybox:latest") for t in img.repo_tags)
    assert run(service.get_image(img.id)).id == img.id
    assert run(service.get_image("busybox:latest")).id == img.id
    assert img.run_config.get("Cmd") == ["sh"]
    with pytest.raises(NotFound) as e:
        run(service.get_image("no-such-image"))
    assert str(e.value) == "No such image: no-such-image"


def test_rootfs_lifecycle_is_idempotent_and_isolated(service):
    img = run(service.get_image("busybox"))

    async def go():
        await service.create_rootfs(img.id, "c1")
        await service.create_rootfs(img.id, "c2")
        p1 = await service.mount_rootfs("c1")
        assert await service.mount_rootfs("c1") == p1  # idempotent
        p2 = await service.mount_rootfs("c2")
        assert os.path.exists(os.path.join(p1, "bin/busybox"))
        with open(os.path.join(p1, "etc/only-c1"), "w") as f:
            f.write("x")
        assert not os.path.exists(os.path.join(p2, "etc/only-c1"))  # copy-on-write per container
        assert await service.rootfs_usage("c1") > 0
        await service.unmount_rootfs("c1")
        await service.unmount_rootfs("c1")  # idempotent
        p1b = await service.mount_rootfs("c1")
        assert os.path.exists(os.path.join(p1b, "etc/only-c1"))  # the writable layer persists
        for key in ("c1", "c2"):
            await service.unmount_rootfs(key)
            await service.remove_rootfs(key)
            await service.remove_rootfs(key)  # idempotent
        assert not _mounted(p1) and not _mounted(p2)
        fresh = "c3"
        await service.create_rootfs(img.id, fresh)
        p3 = await service.mount_rootfs(fresh)
        assert not os.path.exists(os.path.join(p3, "etc/only-c1"))
        await service.unmount_rootfs(fresh)
        await service.remove_rootfs(fresh)
    run(go())
