"""`ketch build --output`: the final stage's root written to the client instead of an image (a
directory, a tar file, a tar on stdout), streamed by ketchd after the build's last message."""

from __future__ import annotations

import io
import os
import tarfile

from .conftest import write_tree

DOCKERFILE = """\
FROM busybox AS gen
RUN mkdir -p /out/sub && echo generated > /out/sub/gen.txt && ln -s sub/gen.txt /out/link
FROM scratch
COPY --from=gen /out/ /
COPY hello.txt /hello.txt
"""


def _context(tmp_path):
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"Dockerfile": DOCKERFILE, "hello.txt": "hello\n"})
    return str(ctx)


def test_output_local_directory(ketch, tmp_path):
    dest = tmp_path / "out"
    r = ketch("build", "--network", "none", "-o", f"type=local,dest={dest}", _context(tmp_path))
    assert "Successfully built" in r.stdout + r.stderr
    assert sorted(os.listdir(dest)) == ["hello.txt", "link", "sub"]
    assert (dest / "hello.txt").read_text() == "hello\n"
    assert (dest / "sub" / "gen.txt").read_text() == "generated\n"
    assert os.readlink(dest / "link") == "sub/gen.txt"
    # buildx's shorthand: a bare path is a local output
    dest2 = tmp_path / "out2"
    ketch("build", "-q", "--network", "none", "-o", str(dest2), _context(tmp_path))
    assert (dest2 / "sub" / "gen.txt").read_text() == "generated\n"


def test_output_tar_file_and_stdout(ketch, tmp_path):
    ctx = _context(tmp_path)
    f = tmp_path / "root.tar"
    ketch("build", "-q", "--network", "none", "--output", f"type=tar,dest={f}", ctx)
    with tarfile.open(f) as tf:
        names = set(tf.getnames())
        assert {"hello.txt", "sub/gen.txt", "link"} <= names, names
        assert tf.extractfile("sub/gen.txt").read() == b"generated\n"
    r = ketch("build", "--network", "none", "-o", "-", ctx, text=False)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:   # stdout is the tar alone
        assert tf.extractfile("hello.txt").read() == b"hello\n"


def test_output_tags_nothing_and_refuses_a_tag(ketch, tmp_path):
    ctx = _context(tmp_path)
    r = ketch("build", "-t", "out:1", "-o", str(tmp_path / "o"), ctx, check=False)
    assert r.returncode != 0 and "makes no image to tag" in r.stderr
    r = ketch("build", "-o", "type=registry,dest=x", ctx, check=False)
    assert r.returncode != 0 and "type=registry" in r.stderr
    r = ketch("build", "-o", "type=local", ctx, check=False)
    assert r.returncode != 0 and "dest= is required" in r.stderr
    assert ketch("images", "-q", "out:1", check=False).stdout.strip() == ""


def test_api_outputs_query(ketchd, tmp_path):
    import json
    from urllib.parse import urlencode

    from .conftest import context_tar
    ctx = _context(tmp_path)
    q = urlencode({"outputs": json.dumps([{"Type": "tar", "Attrs": {}}]), "networkmode": "none", "t": "nope:1"})
    status, _, body = ketchd.request("POST", "/build?" + q, raw=context_tar(ctx),
                                     headers={"Content-Type": "application/x-tar"}, timeout=300)
    assert status == 200
    marker = b'{"aux": {"Output": {"Type": "tar", "ID": "'
    head, sep, rest = body.partition(marker)
    assert sep, body[-2000:]
    iid = rest.split(b'"', 1)[0].decode()
    tar = rest.split(b"\r\n", 1)[1]
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert tf.extractfile("hello.txt").read() == b"hello\n"
    assert b'"aux": {"ID": "' + iid.encode() in head
    status, _, _ = ketchd.request("GET", "/images/nope:1/json")
    assert status == 404   # outputs: the tag is not applied
    status, _, _ = ketchd.request("POST", "/build?" + urlencode({"outputs": json.dumps([{"Type": "oci"}])}),
                                  raw=context_tar(ctx), headers={"Content-Type": "application/x-tar"})
    assert status == 501


def test_copy_layer_committed_in_place_is_its_tar(ketchd, ketch, tmp_path):
    """A COPY step's upper dir becomes its layer's snapshot (no copy): the snapshot holds exactly what
    the layer blob unpacks to (names, types, modes, owners, mtimes, contents, link targets)."""
    from ketch.archive.apply import apply_layer
    from ketch.images import ImageService
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"Dockerfile": "FROM busybox\nCOPY --chmod=0750 tree/ /app/\nCOPY tree/x/two.txt /app/y/\n",
                     "tree/one.txt": "1\n", "tree/x/two.txt": "2" * 5000, "tree/x/deep/three": ""})
    os.symlink("x/two.txt", ctx / "tree" / "link")
    os.utime(ctx / "tree" / "one.txt", (1_500_000_000.7, 1_500_000_000.7))
    ketch("build", "-q", "--network", "none", "-t", "inplace:1", str(ctx))
    svc = ImageService(ketchd.data_root)
    iid, rec = svc.resolve("inplace:1")
    layers = [str(d.digest) for d in svc.manifest(rec).layers]
    chains = rec["chains"]
    for layer, chain in list(zip(layers, chains, strict=True))[-2:]:
        snap = svc.snapshots.layer_dirs(chain)[0]
        out = tmp_path / f"apply-{chain[-8:]}"
        out.mkdir()
        with svc.content.open(layer) as f:
            apply_layer(f, str(out))
        assert _tree(snap) == _tree(str(out))
    assert ketch("run", "--rm", "--network", "none", "inplace:1", "cat", "/app/link").stdout == "2" * 5000


def _tree(root: str) -> dict:
    out = {}
    for top, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(top, n)
            st = os.lstat(p)
            data = os.readlink(p) if os.path.islink(p) else (open(p, "rb").read() if os.path.isfile(p) else None)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data)
    return out
