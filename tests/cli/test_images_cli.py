"""The image commands of the `ketch` CLI, end to end through a private ketchd per test (its own data root)."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.images.conftest import (
    build_image,
    htpasswd_line,
    push_raw,
    random_layer,
    second_ketch,
    start_registry,
    tar_layer,
)


def test_push_pull_round_trip(registry, ketch, tmp_path):
    ketch("image", "base")
    ref = f"{registry.domain}/round/trip:v1"
    ketch("tag", "busybox", ref)
    r = ketch("push", ref)
    assert "Pushed" in r.stdout and "digest: sha256:" in r.stdout
    assert "Layer already exists" in ketch("push", ref).stdout      # second push: HEAD finds every blob
    # cross-repository mount: the blobs are not uploaded again
    ketch("tag", ref, f"{registry.domain}/other/repo:v1")
    k2 = second_ketch(tmp_path, "puller")
    k2("pull", ref)
    r = k2("push", f"{registry.domain}/round/trip:v1")
    k2("tag", ref, f"{registry.domain}/mounted/here:1")
    r = k2("push", f"{registry.domain}/mounted/here:1")
    assert "Mounted from" in r.stdout, r.stdout
    r = k2("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    lines = sorted(r.stdout.split("\n")[:-1])
    iid = ketch("images", "-q").stdout.split()[0]
    assert lines == [f"{registry.domain}/mounted/here:1 {iid}", f"{registry.domain}/round/trip:v1 {iid}"]
    r = k2("images", "--digests", "--format", "{{json .}}")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert any(x["Digest"].startswith("sha256:") for x in rows)
    r = k2("images")
    assert r.stdout.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE", "SHARED", "SIZE"]
    insp = json.loads(k2("image", "inspect", ref).stdout)[0]
    assert insp["Id"].startswith("sha256:" + iid) and insp["Os"] == "linux" and insp["RootFS"]["Type"] == "layers"
    assert insp["Config"]["Cmd"] == ["sh"] and insp["Size"] > 1_000_000
    assert any(d.startswith(f"{registry.domain}/round/trip@sha256:") for d in insp["RepoDigests"])
    assert "busybox-static" in k2("history", "--no-trunc", ref).stdout
    assert k2("system", "check").returncode == 0


def test_pull_quiet_and_all_tags(registry, ketch):
    push_raw(registry.domain, "many/tags:a", [random_layer("a", 1000)])
    push_raw(registry.domain, "many/tags:b", [random_layer("b", 1000)])
    r = ketch("pull", "-q", f"{registry.domain}/many/tags:a")
    assert r.stdout == f"{registry.domain}/many/tags:a\n"
    r = ketch("pull", "-a", "-q", f"{registry.domain}/many/tags")
    assert sorted(r.stdout.split()) == [f"{registry.domain}/many/tags:a", f"{registry.domain}/many/tags:b"]


def test_basic_auth_login_logout(tmp_path, ketch):
    htp = tmp_path / "htpasswd"
    htp.write_text(htpasswd_line("alice", "s3cret"))
    reg = start_registry(tmp_path, auth={"htpasswd": {"realm": "ketch-test", "path": str(htp)}}, name="authreg")
    try:
        ketch("image", "base")
        ref = f"{reg.domain}/private/bb:1"
        ketch("tag", "busybox", ref)
        r = ketch("push", ref, check=False)
        assert r.returncode == 1 and "authentication required" in r.stderr, r.stderr
        r = ketch("login", "-u", "alice", "-p", "wrong", reg.domain, check=False)
        assert r.returncode == 1
        r = ketch("login", "-u", "alice", "--password-stdin", reg.domain, input="s3cret\n")
        assert "Login Succeeded" in r.stdout
        cfg = json.load(open(os.path.join(ketch.env["DOCKER_CONFIG"], "config.json")))
        assert base64.b64decode(cfg["auths"][reg.domain]["auth"]) == b"alice:s3cret"   # kept by the client
        assert os.listdir(ketch.daemon.daemon_docker_config) == []                      # the daemon keeps nothing
        ketch("push", ref)                                  # the credentials go in X-Registry-Auth
        k2 = second_ketch(tmp_path, "k2", docker_config=ketch.env["DOCKER_CONFIG"])
        k2("pull", ref)
        assert "Removing login credentials" in ketch("logout", reg.domain).stdout
        k3 = second_ketch(tmp_path, "k3", docker_config=ketch.env["DOCKER_CONFIG"])
        r = k3("pull", ref, check=False)
        assert r.returncode == 1 and "authentication required" in r.stderr
    finally:
        reg.stop()


@pytest.mark.parametrize("args,needle", [
    (["pull", "library/UPPER"], "repository name must be lowercase"),
    (["pull", "a//b"], "invalid reference format"),
    (["pull", "busybox@sha256:zz"], "invalid reference format"),
    (["tag", "busybox", "x:bad:tag"], "invalid reference format"),
    (["image", "inspect", "no-such-image"], "No such image: no-such-image"),
    (["rmi", "no-such-image"], "No such image: no-such-image"),
    (["push", "127.0.0.1:1/none:1"], "An image does not exist locally with the tag"),
    (["pull", "127.0.0.1:1/none:1"], "cannot connect"),
])
def test_bad_references_and_missing_images(ketch, args, needle):
    if args[0] == "tag":
        ketch("image", "base")
    r = ketch(*args, check=False)
    assert r.returncode == 1, r
    # a reference the CLI parses is refused before any request; the daemon's refusals say whose they are
    local = needle in ("repository name must be lowercase", "invalid reference format")
    assert r.stderr.startswith("Error: " if local else "Error response from daemon: "), r.stderr
    assert needle.lower() in r.stderr.lower() and len(r.stderr.splitlines()) == 1, r.stderr


def test_usage_error_exit_code(ketch):
    r = ketch("pull", check=False)
    assert r.returncode == 2


class _Schema1(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        body = json.dumps({"schemaVersion": 1, "name": "old/img", "tag": "latest", "architecture": "amd64",
                           "fsLayers": [], "history": [], "signatures": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_schema1_is_refused_with_the_reason(ketch):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Schema1)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        r = ketch("pull", f"127.0.0.1:{srv.server_address[1]}/old/img", check=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 1
    assert "schema1 manifests are not supported" in r.stderr and "repush" in r.stderr


def test_rmi_refuses_an_image_in_use(ketch):
    ketch("image", "base")
    ketch("tag", "busybox", "second:tag")
    svc = ketch.service()
    svc.prepare_rootfs("busybox", "ctr-1")
    assert "Untagged: second:tag" in ketch("rmi", "second:tag").stdout   # one of two tags: untag only
    r = ketch("rmi", "busybox", check=False)
    assert r.returncode == 1 and "ctr-1" in r.stderr and "must force" in r.stderr
    assert ketch("images", "-q").stdout.strip()
    r = ketch("rmi", "-f", "busybox")
    assert "Untagged: busybox:latest" in r.stdout and "Deleted" not in r.stdout
    # the container's layers stay while it exists
    assert svc.snapshots.mounts("ctr-1")
    assert ketch("system", "check").returncode == 0
    svc.remove_rootfs("ctr-1")
    r = ketch("image", "prune", "-f")
    assert "deleted: sha256:" in r.stdout
    assert list(svc.content.list()) == [] and svc.snapshots.list() == []


def test_prune_and_gc_remove_only_unreferenced(registry, ketch):
    shared = random_layer("shared", 100_000)
    push_raw(registry.domain, "gc/a:1", [shared, random_layer("a", 50_000)])
    push_raw(registry.domain, "gc/b:1", [shared, random_layer("b", 60_000)])
    ketch("pull", f"{registry.domain}/gc/a:1")
    ketch("pull", f"{registry.domain}/gc/b:1")
    svc = ketch.service()
    before_blobs, before_snaps = set(svc.content.list()), {s["name"] for s in svc.snapshots.list()}
    a_id, a_rec = svc.resolve(f"{registry.domain}/gc/a:1")
    a_only_blobs = {a_id, a_rec["manifest"]} | {d.digest for d in svc.manifest(a_rec).layers[1:]}
    # a stray blob and a stray committed snapshot nobody references
    stray = svc.content.put(b"nobody wants me")
    r = ketch("rmi", f"{registry.domain}/gc/a:1")
    assert "Deleted: " + a_id in r.stdout
    after_blobs, after_snaps = set(svc.content.list()), {s["name"] for s in svc.snapshots.list()}
    assert after_blobs == before_blobs - a_only_blobs           # b's blobs, the shared layer stay
    assert stray not in after_blobs
    assert after_snaps == before_snaps - {a_rec["chain"]}
    assert svc.check() == []
    # b still runs: its root can be prepared
    svc.prepare_rootfs(f"{registry.domain}/gc/b:1", "c")
    svc.remove_rootfs("c")
    # a dangling image (its tag moved away) goes with prune, a tagged one does not
    push_raw(registry.domain, "gc/b:1", [shared, random_layer("b2", 10_000)])
    ketch("pull", f"{registry.domain}/gc/b:1")
    assert "<none>" in ketch("images").stdout
    r = ketch("image", "prune", "-f")
    assert r.stdout.lower().count("deleted: sha256:") == 1
    assert len(ketch("images", "-q").stdout.split()) == 1
    r = ketch("image", "prune", "-a", "-f")
    assert list(svc.content.list()) == [] and svc.snapshots.list() == []


# ------------------------------------------------------------------------------ hostile load

def _tar(members):
    """members: [(TarInfo-like dict, bytes|None)]"""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m, data in members:
            ti = tarfile.TarInfo(m["name"])
            for k, v in m.items():
                if k != "name":
                    setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def _oci_members(layers, tamper=None):
    from ketch.oci import digest as dg
    man, cfg = build_image(layers)
    blobs = {dg.from_bytes(b).hex: b for b in [x for x, _ in layers] + [cfg]}
    blobs[dg.from_bytes(man).hex] = man
    idx = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                               "digest": str(dg.from_bytes(man)), "size": len(man),
                                               "annotations": {"org.opencontainers.image.ref.name": "hostile:1"}}]}
    if tamper == "size":
        idx["manifests"][0]["size"] += 1
    if tamper == "digest":
        k = dg.from_bytes(layers[0][0]).hex
        blobs[k] = blobs[k][:-1] + bytes([blobs[k][-1] ^ 1])
    out = [({"name": "oci-layout"}, b'{"imageLayoutVersion":"1.0.0"}'),
           ({"name": "index.json"}, json.dumps(idx).encode())]
    out += [({"name": f"blobs/sha256/{h}"}, b) for h, b in blobs.items()]
    return out


def _docker_members(layer_tar, diff_id=None):
    from ketch.oci import digest as dg
    diff_id = diff_id or str(dg.from_bytes(layer_tar))
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    return [({"name": f"{dg.from_bytes(cfg).hex}.json"}, cfg),
            ({"name": "l/layer.tar"}, layer_tar),
            ({"name": "manifest.json"}, json.dumps([{"Config": f"{dg.from_bytes(cfg).hex}.json",
                                                     "RepoTags": ["hostile:1"], "Layers": ["l/layer.tar"]}]).encode())]


ESCAPE = f"/tmp/ketch-escape-{uuid.uuid4().hex}"


def _hostile_layer():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("../../../../../../.." + ESCAPE)
        ti.size = 4
        tf.addfile(ti, io.BytesIO(b"evil"))
    return buf.getvalue()


def _cases():
    good = tar_layer({"etc/ok": b"ok"}, compress=False)
    return {
        "dotdot member": (_tar([({"name": "../evil"}, b"x")] + _oci_members([good])), "climbs out"),
        "absolute member": (_tar([({"name": "/abs/evil"}, b"x")] + _oci_members([good])), "absolute path"),
        "device member": (_tar([({"name": "dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)]
                               + _oci_members([good])), "unsupported type"),
        "symlink out": (_tar([({"name": "blobs/x", "type": tarfile.SYMTYPE, "linkname": "../../etc/passwd"}, None)]
                             + _oci_members([good])), "climbs out"),
        "blob digest mismatch": (_tar(_oci_members([good], tamper="digest")), "hashes to"),
        "descriptor size mismatch": (_tar(_oci_members([good], tamper="size")), "descriptor says"),
        "diff id mismatch": (_tar(_docker_members(good[0], diff_id="sha256:" + "0" * 64)), "diff id"),
        "hostile layer": (_tar(_docker_members(_hostile_layer())), "layer entry"),
        "not an archive": (b"hello" * 200, "corrupt or truncated"),
        "no manifest": (_tar([({"name": "x"}, b"y")]), "neither manifest.json"),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_hostile_archives_are_refused(ketch, tmp_path, case):
    data, needle = _cases()[case]
    p = tmp_path / "in.tar"
    p.write_bytes(data)
    r = ketch("load", "-i", str(p), check=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert not os.path.exists(ESCAPE)
    svc = ketch.service()
    assert svc.list() == [] and list(svc.content.list()) == [] and svc.snapshots.list() == []
    assert svc.check() == []


def test_import_and_save_load_round_trip(ketch, tmp_path):
    layer, _ = tar_layer({"bin/hello": b"#!/bin/sh\necho hello\n"}, compress=True)
    p = tmp_path / "rootfs.tar.gz"
    p.write_bytes(layer)
    iid = ketch("import", "-c", 'CMD ["/bin/hello"]', "-c", "ENV A=1", str(p), "imported:1").stdout.strip()
    insp = json.loads(ketch("image", "inspect", "imported:1").stdout)[0]
    assert insp["Id"] == iid and insp["Config"]["Cmd"] == ["/bin/hello"] and insp["Config"]["Env"] == ["A=1"]
    for fmt in ("docker-archive", "oci-archive"):
        out = tmp_path / f"{fmt}.tar"
        ketch("save", "--format", fmt, "-o", str(out), "imported:1")
        k2 = second_ketch(tmp_path, fmt)
        r = k2("load", "-i", str(out))
        assert "Loaded image: imported:1" in r.stdout
        assert json.loads(k2("image", "inspect", "imported:1").stdout)[0]["Id"] == iid
        assert k2("system", "check").returncode == 0
