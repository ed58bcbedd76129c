"""DetachedUnpack (parallel pulls): a layer applied before its parent is committed, committed on
it later, gives the same snapshot as unpack_layer; the safety rules hold; kills leave it clean."""

import io
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from ketch.archive import apply_layer, fix_implied_dirs
from ketch.errors import FailedPrecondition, InvalidArgument
from ketch.oci import digest as dg
from ketch.snapshots import DetachedUnpack, unpack_layer
from tests.archive.helpers import entry, make_tar

D = tarfile.DIRTYPE

# the bottom layer defines usr/ and usr/share/ with their own owner, mode and mtime
L1 = make_tar([entry("usr", D, mode=0o750, uid=7, gid=8, mtime=1_500_000_000),
               entry("usr/share", D, mode=0o2711, uid=9, gid=10, mtime=1_400_000_000),
               entry("usr/share/doc", D, mode=0o755),
               entry("usr/share/doc/a", data=b"lower"),
               entry("etc", D, mode=0o755, mtime=1_300_000_000)])
# the upper layer implies usr/, usr/share/ and usr/share/doc/ (no entries of their own), and a new
# dir new/ (nowhere below: root 0755); etc/ is implied first, then given an entry of its own
L2 = make_tar([entry("usr/share/doc/b", data=b"upper"),
               entry("new/x", data=b"x"),
               entry("etc/passwd", data=b"root:x:0:0"),
               entry("etc", D, mode=0o700, uid=3, gid=4, mtime=1_200_000_000)])


def _tree(root):
    out = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                             st.st_gid, st.st_mtime_ns if stat.S_ISDIR(st.st_mode) else None)
    return out


def _same(a, b):
    """Trees equal, but for the mtime of new/ (implied, nowhere below: the time it was made)."""
    a, b = dict(a), dict(b)
    a["new"], b["new"] = a["new"][:4], b["new"][:4]
    return a == b


def _layer_dir(sn, chain):
    return sn.layer_dirs(chain)[0]


def test_detached_equals_serial(sn, tmp_path):
    base, _ = unpack_layer(sn, io.BytesIO(L1), None)
    serial, _ = unpack_layer(sn, io.BytesIO(L2), base)
    want = _tree(_layer_dir(sn, serial))
    assert want["usr"][1:4] == (0o750, 7, 8) and want["usr/share"][1:4] == (0o2711, 9, 10)
    assert want["usr/share"][4] == 1_400_000_000 * 10**9
    assert want["new"][1:4] == (0o755, 0, 0)
    assert want["etc"][1:] == (0o700, 3, 4, 1_200_000_000 * 10**9)   # its own entry wins
    sn.remove(serial)

    # the same two layers into a second store, the upper one applied first, before its parent exists
    from ketch.snapshots import OverlaySnapshotter
    sn2 = OverlaySnapshotter(str(tmp_path / "sn2"))
    d1, d2 = dg.from_bytes(L1), dg.from_bytes(L2)
    up = DetachedUnpack(sn2, d1, d2)
    down = DetachedUnpack(sn2, None, d1)
    res = up.apply(io.BytesIO(L2))
    assert set(res.implied_dirs) == {"usr", "usr/share", "usr/share/doc", "new"}   # not etc: it has an entry
    assert [s["kind"] for s in sn2.list()] == ["active"] and sn2.list()[0]["parent"] is None
    with pytest.raises(FailedPrecondition):
        up.commit()   # the parent is not committed yet: refused, and nothing stays
    assert sn2.list() == []
    up = DetachedUnpack(sn2, d1, d2)
    up.apply(io.BytesIO(L2))
    down.apply(io.BytesIO(L1))
    assert down.commit() == d1
    top = up.commit()
    assert top == dg.chain_id([d1, d2]) == serial
    assert sn2.stat(top)["parent"] == d1 and sn2.stat(top)["kind"] == "committed"
    assert _same(_tree(_layer_dir(sn2, top)), want)
    assert sn2.check() == []


def test_fix_implied_dirs_matches_apply_with_lowers(tmp_path):
    lower = tmp_path / "lower"
    apply_layer(io.BytesIO(L1), str(lower.mkdir() or lower))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    apply_layer(io.BytesIO(L2), str(a), lowers=[str(lower)])
    res = apply_layer(io.BytesIO(L2), str(b), lowers=None)
    assert _tree(str(b))["usr"][1:4] == (0o755, 0, 0)   # not fixed yet
    fix_implied_dirs(str(b), res.implied_dirs, [str(lower)])
    assert _same(_tree(str(a)), _tree(str(b)))


def test_detached_refuses_hard_link_into_lower_layer(sn):
    base, _ = unpack_layer(sn, io.BytesIO(L1), None)
    evil = make_tar([entry("usr/share/doc/link", tarfile.LNKTYPE, linkname="usr/share/doc/a")])
    u = DetachedUnpack(sn, base, dg.from_bytes(evil))
    with pytest.raises(InvalidArgument, match="not in this layer"):
        u.apply(io.BytesIO(evil))
    assert [s["name"] for s in sn.list()] == [base]   # nothing of it stays


def test_detached_checks_digests(sn):
    u = DetachedUnpack(sn, None, dg.from_bytes(b"another layer"))
    with pytest.raises(InvalidArgument, match="diff id"):
        u.apply(io.BytesIO(L1))
    u = DetachedUnpack(sn, None, dg.from_bytes(L1))
    with pytest.raises(InvalidArgument, match="content digest"):
        u.apply(io.BytesIO(L1), expected_digest=dg.from_bytes(b"not it"))
    assert sn.list() == [] and sn.check() == []


def test_commit_on_parent_rules(sn):
    base, _ = unpack_layer(sn, io.BytesIO(L1), None)
    sn.prepare("has-parent", base)
    with pytest.raises(FailedPrecondition, match="already has parent"):
        sn.commit("x", "has-parent", parent=base)
    sn.prepare("orphan", None)
    with pytest.raises(FailedPrecondition, match="not committed"):
        sn.commit("x", "orphan", parent="has-parent")
    sn.commit("x", "orphan", parent=base)
    assert sn.stat("x")["parent"] == base
    with pytest.raises(FailedPrecondition):
        sn.remove(base)   # now it has a child


def test_one_detached_unpack_per_chain(sn):
    d1 = dg.from_bytes(L1)
    first = DetachedUnpack(sn, None, d1)
    assert first.acquire(blocking=False)
    second = DetachedUnpack(sn, None, d1)
    assert not second.acquire(blocking=False)   # the ChainID's unpack lock is held
    got = []
    t = threading.Thread(target=lambda: got.append(second.apply(io.BytesIO(b"never read"))))
    t.start()
    first.apply(io.BytesIO(L1))
    first.commit()
    t.join(10)
    assert got == [None]   # the second found it committed and read nothing
    assert [s["name"] for s in sn.list()] == [d1]


def test_killed_detached_unpack_leaves_check_clean(sn):
    """kill -9 while a layer is applied ahead of its parent: check() names it, cleanup() removes
    it, and the parent's own unpack is unaffected."""
    blob = make_tar([entry(f"d/f{i}", data=os.urandom(50_000)) for i in range(40)])
    base = dg.from_bytes(L1)
    code = f"""
import sys
sys.path.insert(0, {os.getcwd()!r})
from ketch.oci import digest as dg
from ketch.snapshots import OverlaySnapshotter, DetachedUnpack
u = DetachedUnpack(OverlaySnapshotter({sn.root!r}), {str(base)!r}, {str(dg.from_bytes(blob))!r})
u.apply(sys.stdin.buffer)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        p.stdin.write(blob[: len(blob) // 2])
        p.stdin.flush()
        for _ in range(1000):
            active = [s for s in sn.list() if s["kind"] == "active"]
            if active and os.path.isdir(sn.upper_dir(active[0]["name"]) + "/d") and \
                    len(os.listdir(sn.upper_dir(active[0]["name"]) + "/d")) > 3:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("child never started unpacking")
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
        p.stdin.close()
    assert [(s["kind"], s["parent"]) for s in sn.list()] == [("active", None)]
    assert [x["problem"] for x in sn.check()] == ["incomplete: its unpacking process is gone"]
    sn.cleanup()
    assert sn.list() == [] and sn.check() == []
    # the lock died with the process: the layer unpacks now
    chain, _ = unpack_layer(sn, io.BytesIO(L1), None)
    u = DetachedUnpack(sn, chain, dg.from_bytes(blob))
    u.apply(io.BytesIO(blob))
    assert u.commit() == dg.chain_id([chain, dg.from_bytes(blob)])
    assert sn.check() == []
