"""Content store: atomic, verified, resumable writes in an OCI image layout."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ketch.content import ContentStore
from ketch.errors import InvalidArgument, NotFound, Unavailable
from ketch.oci import digest as dg


@pytest.fixture
def store(tmp_path):
    return ContentStore(str(tmp_path / "content"))


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_layout_and_put(store):
    root = store.root
    assert json.load(open(os.path.join(root, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}
    assert json.load(open(os.path.join(root, "index.json")))["schemaVersion"] == 2
    d = store.put(b"hello")
    assert d == sha(b"hello")
    assert store.path(d) == os.path.join(root, "blobs", "sha256", d.hex)
    assert open(store.path(d), "rb").read() == b"hello"
    assert store.has(d) and store.info(d)["size"] == 5
    assert store.put(b"hello") == d  # idempotent, stored once
    assert list(store.list()) == [d]
    with store.open(d) as f:
        assert f.read() == b"hello"


def test_digest_validated_before_building_a_path(store):
    for bad in ["sha256:../../etc/passwd", "md5:" + "0" * 32, "sha256:" + "A" * 64, "sha256:abc", "x"]:
        with pytest.raises(InvalidArgument):
            store.path(bad)
    with pytest.raises(NotFound):
        store.info(sha(b"nope"))
    with pytest.raises(NotFound):
        store.delete(sha(b"nope"))


def test_wrong_digest_refused_and_nothing_stays(store):
    w = store.writer(expected_digest=sha(b"good"))
    w.write(b"evil")
    with pytest.raises(InvalidArgument, match="content digest is"):
        w.commit()
    assert not store.has(sha(b"good")) and not store.has(sha(b"evil"))
    assert list(store.list()) == [] and store.ingests() == []


def test_wrong_size_refused(store):
    w = store.writer(expected_digest=sha(b"abc"), expected_size=4)
    w.write(b"abc")
    with pytest.raises(InvalidArgument, match="size is 3, expected 4"):
        w.commit()
    w = store.writer(expected_size=2)
    with pytest.raises(InvalidArgument, match="exceed"):
        w.write(b"abc")
    w.abort()
    assert list(store.list()) == [] and store.ingests() == []


def test_sha512(store):
    d = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert store.put(b"x", expected_digest=d) == d
    assert store.path(d).endswith("/blobs/sha512/" + d.split(":")[1])
    assert d in list(store.list())
    assert store.verify() == []


def test_resume_from_offset(store):
    data = os.urandom(300_000)
    w = store.writer(expected_digest=sha(data), expected_size=len(data), ref="pull-layer-1")
    w.write(data[:100_000])
    w.close()  # connection cut: the partial bytes stay
    assert store.ingests()[0]["ref"] == "pull-layer-1"
    assert store.ingests()[0]["offset"] == 100_000
    w = store.writer(expected_digest=sha(data), expected_size=len(data), ref="pull-layer-1")
    assert w.offset == 100_000
    w.write(data[w.offset:])  # what a Range: bytes=100000- request returns
    assert w.commit() == sha(data)
    assert store.read(sha(data)) == data and store.ingests() == []


def test_ref_locked_by_one_writer(store):
    w = store.writer(ref="r")
    with pytest.raises(Unavailable, match="locked"):
        store.writer(ref="r")
    w.abort()
    store.writer(ref="r").abort()


def test_killed_writer_leaves_no_blob(store, tmp_path):
    data_size = 64 << 20
    marker = tmp_path / "started"
    code = f"""
import os, sys
sys.path.insert(0, {os.getcwd()!r})
from ketch.content import ContentStore
s = ContentStore({store.root!r})
w = s.writer(ref="killed")
chunk = b"z" * (1 << 20)
for i in range({data_size >> 20}):
    w.write(chunk)
    if i == 2:
        open({str(marker)!r}, "w").close()
w.commit()
"""
    p = subprocess.Popen([sys.executable, "-c", code])
    try:
        for _ in range(500):
            if marker.exists():
                break
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL
    expected = sha(b"z" * data_size)
    assert not store.has(expected)
    assert list(store.list()) == []  # no partial file under any blob name
    ing = store.ingests()
    assert len(ing) == 1 and 0 < ing[0]["offset"] < data_size
    # and the partial ingest resumes
    w = store.writer(ref="killed")
    while w.offset < data_size:
        w.write(b"z" * min(1 << 20, data_size - w.offset))
    assert w.commit(expected_digest=expected) == expected


def test_verify_finds_corruption(store):
    good = store.put(b"good")
    bad = store.put(b"bad!")
    p = store.path(bad)
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.write(b"BAD")
    stray = os.path.join(store.root, "blobs", "sha256", "not-a-digest")
    open(stray, "w").close()
    problems = store.verify()
    assert {x["digest"] for x in problems} == {bad, None}
    assert any(x["path"] == stray for x in problems)
    assert store.verify(remove=True)
    assert not store.has(bad) and store.has(good)


def test_delete_and_list(store):
    ds = {store.put(bytes([i])) for i in range(5)}
    assert set(store.list()) == ds
    d = ds.pop()
    store.delete(d)
    assert set(store.list()) == ds and not store.has(d)


def test_prune_ingests(store):
    w = store.writer(ref="old")
    w.write(b"x")
    w.close()
    assert store.prune_ingests(older_than=3600) == []
    held = store.writer(ref="held")
    assert len(store.prune_ingests(older_than=0)) == 1  # "old" only; "held" is locked
    assert [i["ref"] for i in store.ingests()] == ["held"]
    held.abort()


def test_chain_id():
    a, b = sha(b"a"), sha(b"b")
    assert dg.chain_id([a]) == a
    assert dg.chain_id([a, b]) == sha(f"{a} {b}".encode())
    assert dg.chain_ids([a, b]) == [a, dg.chain_id([a, b])]


def test_store_and_unpack_in_one_pass(store, tmp_path):
    import io

    from ketch.archive import apply_layer
    from ketch.content import TeeReader
    from tests.archive.helpers import entry, make_tar
    blob = make_tar([entry("f", data=b"x" * 10000)], "gzip")
    w = store.writer(expected_digest=sha(blob), expected_size=len(blob), ref="layer")
    res = apply_layer(TeeReader(io.BytesIO(blob), w), str(tmp_path))
    assert w.commit() == res.digest == sha(blob)
    assert store.read(res.digest) == blob and (tmp_path / "f").read_bytes() == b"x" * 10000


def test_writer_data_path_is_the_growing_ingest(tmp_path):
    store = ContentStore(str(tmp_path / "c"))
    data = os.urandom(3000)
    w = store.writer(ref="grow")
    w.write(data[:1000])
    with open(w.data_path, "rb") as f:   # another reader follows the bytes written so far
        assert f.read() == data[:1000]
        w.write(data[1000:])
        assert f.read() == data[1000:]
        d = w.commit()
        assert not os.path.exists(w.data_path)   # renamed to the blob: an open reader keeps reading it
        f.seek(0)
        assert f.read() == store.read(d) == data


def test_unnamed_ingest_of_a_killed_writer_goes_when_the_store_opens(store):
    """A kill -9 between put's write and its commit leaves a `tmp-` ingest nobody can resume:
    the next open of the store removes it; a named one stays for its resume, a live one stays."""
    code = f"""
import os, sys
sys.path.insert(0, {os.getcwd()!r})
from ketch.content import ContentStore
s = ContentStore({store.root!r})
s.writer(ref="named").write(b"resume me")
s.writer().write(b"879 bytes of a config, say")
os.kill(os.getpid(), 9)
"""
    p = subprocess.run([sys.executable, "-c", code])
    assert p.returncode == -signal.SIGKILL
    assert sorted(i["ref"][:4] for i in store.ingests()) == ["name", "tmp-"]
    live = store.writer()
    live.write(b"still writing")
    reopened = ContentStore(store.root)
    assert sorted(i["ref"] for i in reopened.ingests()) == sorted(["named", live.ref])
    live.abort()
