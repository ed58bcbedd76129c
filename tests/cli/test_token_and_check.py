"""Bearer token auth through the CLI (the token server of tests/registry), `system check`
finding and repairing damage, rmi by ID."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading

from tests.images.conftest import push_raw, random_layer, second_ketch, start_registry
from tests.registry.conftest import free_port
from tests.registry.test_auth import TokenServer


def test_bearer_token_registry_login_push_pull(tmp_path, ketch):
    ts = TokenServer(tmp_path, "ketch-registry", "ketch-issuer")
    ts.port = free_port()
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    asyncio.run_coroutine_threadsafe(ts.start(), loop).result(10)
    reg = start_registry(tmp_path, auth={"token": {
        "realm": f"http://127.0.0.1:{ts.port}/token", "service": "ketch-registry",
        "issuer": "ketch-issuer", "rootcertbundle": str(ts.cert)}}, name="tokreg")
    try:
        ketch("image", "base")
        ref = f"{reg.domain}/team/bb:1"
        ketch("tag", "busybox", ref)
        r = ketch("push", ref, check=False)                 # anonymous tokens carry pull only
        assert r.returncode == 1 and ("denied" in r.stderr or "unauthorized" in r.stderr), r.stderr
        assert "Login Succeeded" in ketch("login", "-u", "alice", "-p", "s3cret", reg.domain).stdout
        ketch("push", ref)
        ketch("logout", reg.domain)
        k2 = second_ketch(tmp_path, "anon", docker_config=ketch.env["DOCKER_CONFIG"])
        k2("pull", ref)                                     # anonymous pull through a `token`
        assert k2("images", "-q").stdout.strip() == ketch("images", "-q").stdout.strip()
        assert {r["user"] for r in ts.requests} == {None, "alice"}
    finally:
        reg.stop()
        asyncio.run_coroutine_threadsafe(ts.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


def test_system_check_finds_and_repairs_damage(registry, ketch):
    push_raw(registry.domain, "chk/a:1", [random_layer("a", 100_000), random_layer("b", 100_000)])
    ref = f"{registry.domain}/chk/a:1"
    ketch("pull", ref)
    svc = ketch.service()
    iid, rec = svc.resolve(ref)
    layer = svc.manifest(rec).layers[1].digest
    # damage: a flipped blob, a missing layer snapshot dir, a tag to a missing image, a dead writer's temp file
    p = svc.content.path(layer)
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    top = rec["chain"]
    snap_dir = [s for s in svc.snapshots.list() if s["name"] == top]
    assert snap_dir
    meta = json.load(open(os.path.join(svc.snapshots.root, "metadata.json")))
    shutil.rmtree(os.path.join(svc.snapshots.root, "snapshots", str(meta["snapshots"][top]["id"])))
    with svc.meta.write() as doc:
        doc["tags"]["docker.io/library/ghost:latest"] = "sha256:" + "1" * 64
    open(os.path.join(svc.meta.dir, "metadata.json.tmp-999999-abc"), "w").write("{}")
    r = ketch("system", "check", check=False)
    assert r.returncode == 1
    out = r.stdout
    assert f"content: {layer}: content digest is" in out
    assert f"snapshots: {top}: directory missing" in out
    assert "metadata: docker.io/library/ghost:latest: tag points at missing image" in out
    assert "temp file of a dead writer" in out
    # the damaged blob and snapshot go; the image then lacks them until it is pulled again, which the
    # second look reports, and the exit status says so
    r = ketch("system", "check", "--repair", check=False)
    assert r.returncode == 1 and "problems left after the repair" in r.stdout
    assert f"still: metadata: {iid}: layer blob {layer} missing" in r.stdout
    assert not svc.content.has(layer)
    assert top not in [s["name"] for s in svc.snapshots.list()]
    assert "ghost" not in json.dumps(svc.meta.snapshot()["tags"])
    ketch("pull", ref)                       # fetches the damaged blob again and re-unpacks the layer
    r = ketch("system", "check", check=False)
    assert r.returncode == 0 and "0 problems" in r.stdout
    assert svc.content.has(layer) and top in [s["name"] for s in svc.snapshots.list()]


def test_rmi_by_id(ketch):
    ketch("image", "base")
    ketch("tag", "busybox", "two:tags")
    short = ketch("images", "-q").stdout.split()[0]
    r = ketch("rmi", short, check=False)
    assert r.returncode == 1 and "referenced in multiple repositories" in r.stderr
    r = ketch("rmi", "-f", short)
    assert "Untagged: busybox:latest" in r.stdout and "Untagged: two:tags" in r.stdout
    assert f"Deleted: sha256:{short}" in r.stdout
    assert ketch("images", "-q").stdout == ""
