"""Pull against the real registry: shared layers stored once, digest mismatch refused,
a cut connection resumed, a killed pull finished by the next one."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time

import pytest

from ketch.errors import Unavailable
from ketch.oci import digest as dg
from tests.cutproxy import CutProxy

from .conftest import push_raw, random_layer


def _du(path):
    total = 0
    seen = set()
    for dp, dns, fns in os.walk(path):
        for n in fns + dns:
            st = os.lstat(os.path.join(dp, n))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def test_shared_layers_stored_and_unpacked_once(registry, ketch):
    base = [random_layer(f"l{i}", 300_000) for i in range(3)]
    a4, b4 = random_layer("a", 400_000), random_layer("b", 500_000)
    push_raw(registry.domain, "ketch/a:1", base + [a4])
    push_raw(registry.domain, "ketch/b:1", base + [b4])
    ketch("pull", f"{registry.domain}/ketch/a:1")
    svc = ketch.service()
    snaps1 = len(svc.snapshots.list())
    blobs1 = set(svc.content.list())
    du_content1, du_snap1 = _du(svc.content.root + "/blobs"), _du(svc.snapshots.root + "/snapshots")
    r = ketch("pull", f"{registry.domain}/ketch/b:1")
    assert r.stdout.count("Already exists") == 3, r.stdout
    snaps2 = len(svc.snapshots.list())
    blobs2 = set(svc.content.list())
    assert snaps1 == 4 and snaps2 == 5            # one new snapshot: the 4th layer
    new = blobs2 - blobs1
    assert str(dg.from_bytes(b4[0])) in new and len(new) == 3   # layer, config, manifest
    grow_content = _du(svc.content.root + "/blobs") - du_content1
    grow_snap = _du(svc.snapshots.root + "/snapshots") - du_snap1
    # what the second image cost is its 4th layer (plus small JSON and directory blocks)
    assert len(b4[0]) <= grow_content < len(b4[0]) + 64 * 1024
    assert 500_000 <= grow_snap < 500_000 + 64 * 1024
    sizes = {tuple(s["RepoTags"]): s for s in svc.list()}
    a = sizes[(f"{registry.domain}/ketch/a:1",)]
    assert a["SharedSize"] >= 900_000 and a["Size"] > a["SharedSize"]
    assert ketch("system", "check").returncode == 0


def test_blob_not_matching_digest_is_refused_and_nothing_stays(registry, ketch):
    good = random_layer("g", 200_000)
    bad = random_layer("x", 300_000)
    push_raw(registry.domain, "ketch/bad:1", [good, bad])
    # corrupt the stored layer in the registry's storage: same length, different bytes
    p = registry.blob_data_path(str(dg.from_bytes(bad[0])))
    data = bytearray(open(p, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(p, "wb").write(bytes(data))
    r = ketch("pull", f"{registry.domain}/ketch/bad:1", check=False)
    assert r.returncode == 1
    # the bytes are refused by the content digest check or, if the unpacker meets the damage first
    # (a broken deflate block), by the decompressor; either way the error names the layer
    assert str(dg.from_bytes(bad[0])) in r.stderr, r.stderr
    svc = ketch.service()
    assert not svc.content.has(str(dg.from_bytes(bad[0])))
    # no partial bytes of it kept either (a good layer cut short by the failure may keep its resumable ingest)
    assert [i for i in svc.content.ingests() if i["ref"] == f"pull-{dg.from_bytes(bad[0])}"] == []
    chain_bad = dg.chain_id([good[1], bad[1]])
    assert chain_bad not in [s["name"] for s in svc.snapshots.list()]
    assert all(s["kind"] == "committed" for s in svc.snapshots.list())
    assert svc.list() == []
    assert svc.check() == []


def test_cut_pull_resumes(registry, ketch):
    layer = random_layer("big", 2_000_000)
    digest = str(dg.from_bytes(layer[0]))
    push_raw(registry.domain, "ketch/cut:1", [layer])
    proxy = CutProxy(registry.port, digest, cut_after=700_000)
    try:
        r = ketch("pull", f"127.0.0.1:{proxy.port}/ketch/cut:1")
        assert "Pull complete" in r.stdout
        ranges = [rg for line, rg in proxy.requests if digest in line and rg]
        assert ranges and ranges[0].lower().startswith("range: bytes=") and not ranges[0].endswith("=0-")
    finally:
        proxy.stop()
    svc = ketch.service()
    assert svc.content.has(digest) and svc.check() == []


def test_interrupted_pull_is_resumed_by_the_next_pull(registry, ketch):
    layer = random_layer("big", 2_000_000)
    digest = str(dg.from_bytes(layer[0]))
    push_raw(registry.domain, "ketch/resume:1", [layer])
    proxy = CutProxy(registry.port, digest, cut_after=900_000, die=True)
    svc = ketch.service()
    try:
        svc_cut = type(svc)(svc.root)
        from ketch.registry import RegistryClient
        svc_cut.client = lambda auth=None, mirror=None: RegistryClient(retries=1, backoff=0.01)
        with pytest.raises(Unavailable):
            asyncio.run(svc_cut.pull(f"127.0.0.1:{proxy.port}/ketch/resume:1"))
    finally:
        proxy.stop()
    kept = [i for i in svc.content.ingests() if i["ref"] == f"pull-{digest}"]
    assert kept and 0 < kept[0]["offset"] < len(layer[0])
    assert [s for s in svc.snapshots.list() if s["kind"] != "committed"] == []
    proxy2 = CutProxy(registry.port, "no-cut", cut_after=0)
    try:
        asyncio.run(svc.pull(f"127.0.0.1:{proxy2.port}/ketch/resume:1"))
        got = [rg for line, rg in proxy2.requests if digest in line]
        assert got == [f"Range: bytes={kept[0]['offset']}-"], proxy2.requests
    finally:
        proxy2.stop()
    assert svc.content.ingests() == [] and svc.check() == []


def test_kill_9_during_pull_then_pull_again_is_clean(registry, ketch, tmp_path):
    """ketchd does the pull for the CLI: kill -9 it at random moments of a pull (a CLI that goes
    away is covered too: it cancels the daemon's pull), restart it, pull again: the store is clean."""
    from .conftest import restart_daemon, second_ketch
    layers = [random_layer(f"k{i}", 6_000_000) for i in range(4)]
    push_raw(registry.domain, "ketch/kill:1", layers)
    ref = f"{registry.domain}/ketch/kill:1"
    t0 = time.monotonic()
    second_ketch(tmp_path, "timing")("pull", "-q", ref)   # how long a whole pull takes here
    whole = time.monotonic() - t0
    rnd = random.Random()
    interrupted = 0
    svc = ketch.service()
    for attempt in range(12):                     # until two pulls were cut (a fast pull may finish first)
        if interrupted >= 2 and attempt >= 4:
            break
        if svc.list():                            # an attempt that finished: pull it all again
            ketch("rmi", ref)
        p = subprocess.Popen(ketch.cmd("pull", ref), env=ketch.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not svc.content.ingests() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)                      # the daemon is downloading
        time.sleep(rnd.uniform(0, whole * 0.3))
        if p.poll() is None:
            interrupted += 1
            if attempt % 2:
                p.send_signal(signal.SIGKILL)     # the CLI goes away: the daemon cancels its pull
                p.wait()
            else:
                ketch.daemon.kill9()              # the daemon dies mid-pull
                p.wait()
                restart_daemon(ketch.daemon)
        p.wait()
    assert interrupted >= 1
    ketch("pull", ref)
    r = ketch("system", "check", check=False)
    assert r.returncode == 0, r.stdout
    assert "0 problems" in r.stdout
    svc = ketch.service()
    assert all(s["kind"] == "committed" for s in svc.snapshots.list())
    assert len(svc.snapshots.list()) == 4
    assert svc.content.ingests() == []


def _gz_layer(entries):
    import gzip

    from tests.archive.helpers import make_tar
    raw = make_tar(entries)
    return gzip.compress(raw, mtime=0), str(dg.from_bytes(raw))


def test_parallel_unpack_gives_implied_dirs_the_lower_metadata(registry, ketch, tmp_path):
    """Layers are applied before their parents are committed; the result is the serial one:
    implied directories take owner/mode/mtime from the layer below, hard links stay inside
    their own layer."""
    import tarfile

    from ketch.snapshots import OverlaySnapshotter, unpack_layer
    from tests.archive.helpers import entry
    from tests.snapshots.test_detached import _tree
    D = tarfile.DIRTYPE
    # the bottom layer is big, so the others are applied (in parallel) long before it is committed
    l1 = _gz_layer([entry("usr", D, mode=0o750, uid=7, gid=8, mtime=1_500_000_000),
                    entry("usr/share", D, mode=0o2711, uid=9, gid=10, mtime=1_400_000_000),
                    entry("usr/big", data=os.urandom(3_000_000))])
    l2 = _gz_layer([entry("usr/share/doc/b", data=b"upper"), entry("new/x", data=b"x"),
                    entry("usr/share/doc/hard", tarfile.LNKTYPE, linkname="usr/share/doc/b")])
    l3 = _gz_layer([entry("usr/share/third", data=b"3")])
    push_raw(registry.domain, "ketch/implied:1", [l1, l2, l3])
    ketch("pull", f"{registry.domain}/ketch/implied:1")
    svc = ketch.service()
    chains = dg.chain_ids([l1[1], l2[1], l3[1]])
    ref = OverlaySnapshotter(str(tmp_path / "serial"))
    parent = None
    for blob, _ in (l1, l2, l3):
        import gzip
        parent, _ = unpack_layer(ref, __import__("io").BytesIO(gzip.decompress(blob)), parent)
    fresh = {"new", "usr/share/doc"}   # implied, nowhere below: their mtime is when they were made
    for chain in chains:
        got = _tree(svc.snapshots.layer_dirs(chain)[0])
        want = _tree(ref.layer_dirs(chain)[0])
        for t in (got, want):
            for k in fresh & set(t):
                t[k] = t[k][:4]
        assert got == want, chain
    got2 = _tree(svc.snapshots.layer_dirs(chains[1])[0])
    assert got2["usr"][1:] == (0o750, 7, 8, 1_500_000_000 * 10**9)
    assert got2["usr/share"][1:4] == (0o2711, 9, 10)
    st = os.stat(svc.snapshots.layer_dirs(chains[1])[0] + "/usr/share/doc/hard")
    assert st.st_nlink == 2
    assert ketch("system", "check").returncode == 0


def test_parallel_pull_refuses_hard_link_into_lower_layer(registry, ketch):
    import tarfile

    from tests.archive.helpers import entry
    l1 = _gz_layer([entry("etc/shadow", data=b"secret", mode=0o600)])
    evil = _gz_layer([entry("tmp/steal", tarfile.LNKTYPE, linkname="etc/shadow")])
    push_raw(registry.domain, "ketch/evil:1", [l1, evil])
    r = ketch("pull", f"{registry.domain}/ketch/evil:1", check=False)
    assert r.returncode == 1, r.stderr
    # the target is looked up in the layer's own directory only, where etc/ does not exist
    assert "hard link target 'etc/shadow'" in r.stderr and str(dg.from_bytes(evil[0])) in r.stderr, r.stderr
    svc = ketch.service()
    assert all(s["kind"] == "committed" for s in svc.snapshots.list())
    assert dg.chain_id([l1[1], evil[1]]) not in [s["name"] for s in svc.snapshots.list()]
    assert svc.list() == [] and svc.check() == []


def test_cancelled_unpack_leaves_nothing(tmp_path):
    """A pull cancelled while a layer is being applied, or while it waits for its parent, removes
    the layer's snapshot only after the applying thread is done, and releases the ChainID lock."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from ketch.images import pull as pl
    from ketch.snapshots import DetachedUnpack, OverlaySnapshotter
    from tests.archive.helpers import entry, make_tar
    sn = OverlaySnapshotter(str(tmp_path / "sn"))
    blob = make_tar([entry(f"f{i}", data=os.urandom(20_000)) for i in range(50)])
    diff = dg.from_bytes(blob)
    parent = dg.from_bytes(b"a parent that never comes")

    class Slow(io.RawIOBase):
        def __init__(self):
            self.b = io.BytesIO(blob)

        def readable(self):
            return True

        def read(self, n=-1):
            time.sleep(0.002)
            return self.b.read(min(n if n and n > 0 else 4096, 4096))

    async def go(cancel_when):
        ex = ThreadPoolExecutor(2)
        u = DetachedUnpack(sn, parent, diff)
        s = Slow()
        never = asyncio.get_running_loop().create_future()
        t = asyncio.create_task(pl._unpack(ex, u, lambda: s, None, lambda: asyncio.shield(never)))
        deadline = time.monotonic() + 30
        if cancel_when == "applying":
            while not (sn.list() and os.listdir(sn.upper_dir(sn.list()[0]["name"]))):
                assert time.monotonic() < deadline and not t.done()
                await asyncio.sleep(0.001)
        else:
            while u.result is None:
                assert time.monotonic() < deadline and not t.done()
                await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        ex.shutdown()
        return s

    for when in ("applying", "waiting for the parent"):
        s = asyncio.run(go(when))
        assert s.b.tell() == len(blob)  # the apply ran to its end before anything was removed
        assert sn.list() == [] and sn.check() == [], when
        probe = DetachedUnpack(sn, parent, diff)
        assert probe.acquire(blocking=False), when   # the ChainID lock was released
        probe.close()
