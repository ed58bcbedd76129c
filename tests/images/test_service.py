"""ImageService and AsyncImageService beyond the CLI: container roots, platforms and indexes,
two processes pulling into one root."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

from ketch.oci import digest as dg

from .conftest import build_image, random_layer


def test_engine_images_rootfs_lifecycle(tmp_path):
    from ketch.images.async_service import AsyncImageService
    eng = AsyncImageService(str(tmp_path / "root"))
    eng.svc.make_base_image()

    async def main():
        img = await eng.get_image("busybox")
        assert img.run_config["Cmd"] == ["sh"] and img.id.startswith("sha256:") and img.size > 0
        await eng.create_rootfs(img.id, "c1")
        await eng.create_rootfs(img.id, "c2")
        p1 = await eng.mount_rootfs("c1")
        assert p1 == await eng.mount_rootfs("c1")            # idempotent
        p2 = await eng.mount_rootfs("c2")
        assert os.path.islink(os.path.join(p1, "bin", "sh"))
        with open(os.path.join(p1, "etc", "passwd"), "a") as f:
            f.write("x" * 100_000)
        assert "x" * 10 not in open(os.path.join(p2, "etc", "passwd")).read()   # copy-on-write per container
        assert await eng.rootfs_usage("c1") > 100_000
        assert eng.svc.users(img.id) == ["c1", "c2"]
        try:
            await eng.remove_image("busybox")
            raise AssertionError("rmi of an image in use succeeded")
        except Exception as e:  # noqa: BLE001
            assert "must force" in str(e)
        for k in ("c1", "c2"):
            await eng.unmount_rootfs(k)
            await eng.unmount_rootfs(k)
            await eng.remove_rootfs(k)
        assert not os.path.exists(p1)
        # save -> load through the async faces
        chunks = [c async for c in eng.save_images(["busybox"], "oci-archive")]
        other = AsyncImageService(str(tmp_path / "root2"))

        async def feed():
            for c in chunks:
                yield c
        evs = [e async for e in other.load_images(feed())]
        assert evs == [{"stream": "Loaded image: busybox:latest\n"}]
        assert (await other.inspect_image("busybox"))["Id"] == img.id
    asyncio.run(main())
    assert eng.svc.check() == []


def _push_index(domain, repo_tag):
    """An OCI index with linux/amd64 and linux/arm64 images; returns (index digest, {arch: manifest digest})."""
    from ketch.registry import RegistryClient
    out = {}
    docs = []
    for arch in ("amd64", "arm64"):
        layers = [random_layer(f"{arch}-file", 10_000)]
        man, cfg = build_image(layers)
        c = json.loads(cfg)
        c["architecture"] = arch
        cfg = json.dumps(c).encode()
        m = json.loads(man)
        m["config"]["digest"], m["config"]["size"] = str(dg.from_bytes(cfg)), len(cfg)
        man = json.dumps(m).encode()
        docs.append((arch, layers, cfg, man))
    idx = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": str(dg.from_bytes(man)),
         "size": len(man), "platform": {"architecture": arch, "os": "linux"}} for arch, _, _, man in docs]}).encode()

    async def go():
        async with RegistryClient() as cl:
            ref = f"{domain}/{repo_tag}"
            for arch, layers, cfg, man in docs:
                for b in [x for x, _ in layers] + [cfg]:
                    await cl.push_blob(ref, str(dg.from_bytes(b)), len(b), b)
                d = str(dg.from_bytes(man))
                await cl.put_manifest(ref.rsplit(":", 1)[0] + "@" + d, man,
                                      "application/vnd.oci.image.manifest.v1+json")
                out[arch] = d
            await cl.put_manifest(ref, idx, "application/vnd.oci.image.index.v1+json")
    asyncio.run(go())
    return str(dg.from_bytes(idx)), out


def test_platform_choice_and_index_push(registry, ketch):
    idx, mans = _push_index(registry.domain, "multi/img:1")
    ref = f"{registry.domain}/multi/img:1"
    ketch("pull", "--platform", "linux/arm64", ref)
    insp = json.loads(ketch("image", "inspect", ref).stdout)[0]
    assert insp["Architecture"] == "arm64" and insp["Descriptor"]["digest"] == mans["arm64"]
    assert insp["RepoDigests"] == [f"{registry.domain}/multi/img@{idx}"]
    # only one platform here: a push sends that platform's manifest
    ketch("tag", ref, f"{registry.domain}/single/img:1")
    assert mans["arm64"] in ketch("push", f"{registry.domain}/single/img:1").stdout
    # both platforms local: the index itself is pushed (same digest)
    ketch("pull", "--platform", "linux/amd64", ref)
    ketch("tag", ref, f"{registry.domain}/copy/img:1")
    r = ketch("push", f"{registry.domain}/copy/img:1")
    assert f"digest: {idx}" in r.stdout, r.stdout
    r = ketch("pull", "--platform", "linux/s390x", ref, check=False)
    assert r.returncode == 1 and "no matching manifest for linux/s390x" in r.stderr
    assert ketch("system", "check").returncode == 0


def test_two_processes_pull_the_same_image_into_one_root(registry, ketch):
    from .conftest import push_raw
    layers = [random_layer(f"p{i}", 2_000_000) for i in range(3)]
    push_raw(registry.domain, "para/img:1", layers)
    ref = f"{registry.domain}/para/img:1"
    procs = [subprocess.Popen(ketch.cmd("pull", ref), env=ketch.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    svc = ketch.service()
    assert len(svc.snapshots.list()) == 3 and len(svc.list()) == 1
    assert ketch("system", "check").returncode == 0


def test_engine_pull_and_push_with_request_credentials(tmp_path):
    """The daemon passes X-Registry-Auth credentials per request; nothing is stored."""
    from ketch.images.async_service import AsyncImageService

    from .conftest import htpasswd_line, start_registry
    htp = tmp_path / "htpasswd"
    htp.write_text(htpasswd_line("bob", "pw"))
    reg = start_registry(tmp_path, auth={"htpasswd": {"realm": "t", "path": str(htp)}}, name="authreg")
    try:
        eng = AsyncImageService(str(tmp_path / "root"), docker_config=str(tmp_path / "no-config.json"))
        eng.svc.make_base_image()
        eng.svc.tag("busybox", f"{reg.domain}/p/bb:1")

        async def main():
            denied = [e async for e in eng.push_image(f"{reg.domain}/p/bb", "1")]
            assert "authentication required" in denied[-1]["error"]
            ok = [e async for e in eng.push_image(f"{reg.domain}/p/bb", "1", {"username": "bob", "password": "pw"})]
            assert "error" not in ok[-1] and ok[-1]["status"].startswith("1: digest: sha256:")
            other = AsyncImageService(str(tmp_path / "root2"), docker_config=str(tmp_path / "no-config.json"))
            evs = [e async for e in other.pull_image(f"{reg.domain}/p/bb", "1", None,
                                                     {"username": "bob", "password": "pw"})]
            assert evs[-1]["status"].startswith("Status: Downloaded newer image"), evs[-1]
            assert (await other.get_image(f"{reg.domain}/p/bb:1")).id == eng.svc.resolve("busybox")[0]
        asyncio.run(main())
        assert not os.path.exists(tmp_path / "no-config.json")
    finally:
        reg.stop()


def test_streamed_gunzip_members_truncation_corruption():
    import gzip
    import io

    import pytest

    from ketch.errors import InvalidArgument
    from ketch.images.pull import _Gunzip
    a, b = os.urandom(3_000_000), b"x" * 2_000_000
    data = gzip.compress(a, compresslevel=1) + gzip.compress(b)     # two members, as pigz writes
    src = io.BytesIO(data)
    g = _Gunzip(src, src.read(2))
    out = bytearray()
    while chunk := g.read(10240):
        out += chunk
    assert bytes(out) == a + b
    for bad in (data[:-100], data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]):
        src = io.BytesIO(bad)
        g = _Gunzip(src, src.read(2))
        with pytest.raises(InvalidArgument):
            while g.read(1 << 16):
                pass
