"""A kill during an unpack leaves nothing that looks committed; check() sees it, cleanup() removes it."""

import os
import signal
import subprocess
import sys
import time

from tests.archive.helpers import entry, make_tar


def test_killed_unpack_detected_and_cleaned(sn, tmp_path):
    blob = make_tar([entry(f"f{i}", data=os.urandom(50_000)) for i in range(40)])
    code = f"""
import sys
sys.path.insert(0, {os.getcwd()!r})
from ketch.snapshots import OverlaySnapshotter, unpack_layer
unpack_layer(OverlaySnapshotter({sn.root!r}), sys.stdin.buffer)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        p.stdin.write(blob[: len(blob) // 2])
        p.stdin.flush()
        for _ in range(1000):  # wait until the child has an active snapshot with files in it
            active = [s for s in sn.list() if s["kind"] == "active"]
            if active and len(os.listdir(sn.upper_dir(active[0]["name"]))) > 3:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("child never started unpacking")
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
        p.stdin.close()
    assert [s["kind"] for s in sn.list()] == ["active"]  # nothing committed
    upper = sn.upper_dir(active[0]["name"])
    problems = sn.check()
    assert [x["problem"] for x in problems] == ["incomplete: its unpacking process is gone"]
    # a directory left by a kill between mkdir and the metadata write
    orphan = os.path.join(sn.root, "snapshots", "999")
    os.makedirs(orphan + "/fs")
    assert any(x["path"] == orphan and "orphan" in x["problem"] for x in sn.check())
    removed = sn.cleanup()
    assert orphan in removed and os.path.dirname(upper) in removed
    assert sn.list() == [] and sn.check() == [] and not os.path.exists(upper)


def test_live_unpack_and_containers_survive_cleanup(sn):
    from ketch.snapshots.overlay import OWNER_LABEL, owner_label
    sn.prepare("container", None)
    sn.prepare("extract-live", None, labels={OWNER_LABEL: owner_label()})
    assert sn.check() == [] and sn.cleanup() == []
    assert {s["name"] for s in sn.list()} == {"container", "extract-live"}
    sn.commit("layer", "extract-live")
    assert OWNER_LABEL not in sn.stat("layer")["labels"]
