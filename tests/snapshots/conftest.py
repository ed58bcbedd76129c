import os

import pytest

from ketch.linux import syscalls as sc
from ketch.snapshots import OverlaySnapshotter

# every snapshotter implementation runs the conformance suite (tests/snapshots/test_conformance.py)
IMPLEMENTATIONS = {"overlay": OverlaySnapshotter}


def _mounts_under(path):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path.rstrip("/") + "/"):
                out.append(mp)
    return out


@pytest.fixture
def mounts_cleanup(tmp_path):
    """Unmount anything a test left under its tmp dir, and fail if there was any."""
    yield
    left = _mounts_under(str(tmp_path))
    for mp in reversed(left):
        sc.umount2(mp, sc.MNT_DETACH)
    assert not left, f"test left mounts behind: {left}"


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def sn(request, tmp_path, mounts_cleanup):
    return IMPLEMENTATIONS[request.param](str(tmp_path / "sn"))


def mkdir(p):
    os.makedirs(p, exist_ok=True)
    return str(p)
