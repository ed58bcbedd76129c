import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import helpers  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root")
        for item in items:
            if "unit" not in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_rootfs():
    d = tempfile.mkdtemp(prefix="ketch-bbroot-")
    helpers.make_busybox_rootfs(os.path.join(d, "rootfs"))
    yield os.path.join(d, "rootfs")
    shutil.rmtree(d, ignore_errors=True)


def _host_state():
    """What a test run may leave behind on the host, by name."""
    import glob
    state = set()
    for d in glob.glob("/sys/fs/cgroup/*/*/"):
        state.add(("cgroup", d.rstrip("/")))
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if "ketch" in mp or mp.endswith("/netns") or "/netns/" in mp:
                    state.add(("mount", mp))
    except OSError:
        pass
    for d in glob.glob("/run/netns/*"):
        state.add(("netns", d))
    for d in glob.glob("/sys/class/net/*"):
        state.add(("link", os.path.basename(d)))
    import json
    import subprocess
    try:
        out = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True, timeout=10).stdout
        for o in json.loads(out or "{}").get("nftables", []):
            if "table" in o:
                state.add(("nftables table", f"{o['table']['family']} {o['table']['name']}"))
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return state


def pytest_sessionstart(session):
    session.config._ketch_host_before = _host_state() if os.geteuid() == 0 else set()


def pytest_sessionfinish(session, exitstatus):
    """Every test cleans up after itself: report what the run left on the host (a failure in CI)."""
    if os.geteuid() != 0:
        return
    import time
    left = set()
    for _ in range(20):     # cgroups and mounts of the last test may need a moment to go
        left = _host_state() - session.config._ketch_host_before
        if not left:
            return
        time.sleep(0.25)
    lines = "\n".join(f"  {kind}: {name}" for kind, name in sorted(left))
    sys.stderr.write(f"\nthe test run left this on the host:\n{lines}\n")
    if os.environ.get("CI") == "true" and session.exitstatus == 0:
        session.exitstatus = 1
