"""RegistryClient against a real docker-registry: push, pull, index, mount, errors, corruption."""

from __future__ import annotations

import asyncio
import io

import pytest

from ketch.errors import FailedPrecondition, InvalidArgument, NotFound
from ketch.oci import image as oci
from ketch.oci import platform
from ketch.oci.reference import parse
from ketch.registry import RegistryClient

from .conftest import make_image


async def push_image(c: RegistryClient, ref, img, chunk_size=None):
    results = []
    for i, b in enumerate(img.blobs()):
        # alternate data sources: bytes and a file object
        data = b.data if i % 2 == 0 else io.BytesIO(b.data)
        results.append(await c.push_blob(ref, b.digest, len(b.data), data, chunk_size=chunk_size))
    digest = await c.put_manifest(ref, img.manifest, img.media_type)
    return results, digest


def test_push_pull_round_trip(registry):
    img = make_image(seed="rt")
    ref = parse(f"{registry.domain}/ketch/roundtrip:v1")

    async def main():
        async with RegistryClient() as c:
            await c.ping(registry.domain)
            results, digest = await push_image(c, ref, img)
            assert results == ["uploaded"] * 3
            assert digest == img.digest
            # second push skips everything
            results2, _ = await push_image(c, ref, img)
            assert results2 == ["exists"] * 3

            by_tag = await c.get_manifest(ref)
            assert by_tag.digest == img.digest and by_tag.data == img.manifest
            assert by_tag.media_type == oci.OCI_MANIFEST
            assert isinstance(by_tag.manifest, oci.Manifest)
            assert [d.digest for d in by_tag.manifest.layers] == [x.digest for x in img.layers]
            assert [d.compression for d in by_tag.manifest.layers] == [None, "gzip"]
            by_digest = await c.get_manifest(ref.with_digest(img.digest))
            assert by_digest.data == img.manifest
            head = await c.head_manifest(ref)
            assert head.digest == img.digest and head.size == len(img.manifest)

            for b in img.blobs():
                assert await c.blob_exists(ref, b.digest) == len(b.data)
                async with await c.open_blob(ref, b.digest, size=len(b.data)) as r:
                    assert await r.readall() == b.data
            # Range: start in the middle
            layer = img.layers[1]
            async with await c.open_blob(ref, layer.digest, offset=10, size=len(layer.data)) as r:
                assert await r.readall() == layer.data[10:]

            # another tag, then list
            await c.put_manifest(ref.with_tag("v2"), img.manifest, img.media_type)
            assert sorted(await c.list_tags(ref.repository())) == ["v1", "v2"]
            assert sorted(await c.list_tags(ref.repository(), page_size=1)) == ["v1", "v2"]

            await c.delete_manifest(ref.with_digest(img.digest))
            with pytest.raises(NotFound, match="manifest unknown"):
                await c.get_manifest(ref)
            with pytest.raises(NotFound, match="manifest unknown"):
                await c.head_manifest(ref.with_digest(img.digest))

    asyncio.run(main())


def test_chunked_upload(registry):
    img = make_image(seed="chunked", big=300_000)
    ref = parse(f"{registry.domain}/ketch/chunked:latest")

    async def main():
        async with RegistryClient() as c:
            results, _ = await push_image(c, ref, img, chunk_size=64 * 1024)
            assert results == ["uploaded"] * 3
            got = await c.get_manifest(ref)
            layer = got.manifest.layers[1]
            assert layer.size > 64 * 1024 * 2   # really needed several PATCHes
            async with await c.open_blob(ref, layer.digest, size=layer.size) as r:
                assert await r.readall() == img.layers[1].data

    asyncio.run(main())


def test_index_push_pull_and_platform_choice(registry):
    amd = make_image("amd64", docker=True, seed="amd")
    arm = make_image("arm64", "v8", docker=True, seed="arm")
    armv6 = make_image("arm", "v6", docker=True, seed="armv6")
    repo = parse(f"{registry.domain}/ketch/multi", default_tag=None)

    async def main():
        async with RegistryClient() as c:
            entries = []
            for img in (amd, arm, armv6):
                await push_image(c, repo.with_digest(img.digest), img)
                entries.append({"mediaType": img.media_type, "digest": img.digest, "size": len(img.manifest),
                                "platform": img.extra["platform"]})
            index = oci.canonical_json({"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST_LIST,
                                        "manifests": entries})
            assert await c.put_manifest(repo.with_tag("latest"), index, oci.DOCKER_MANIFEST_LIST) == \
                oci.sha256_digest(index)

            got = await c.get_manifest(repo.with_tag("latest"))
            assert got.media_type == oci.DOCKER_MANIFEST_LIST
            assert isinstance(got.manifest, oci.Index)
            chosen = got.manifest.choose(platform.parse("linux/arm64/v8"))
            assert chosen.digest == arm.digest
            assert got.manifest.choose(platform.parse("linux/x86_64")).digest == amd.digest
            # arm/v7 hosts run arm/v6 images
            assert got.manifest.choose(platform.parse("linux/arm/v7")).digest == armv6.digest
            with pytest.raises(NotFound, match="no matching manifest for linux/s390x"):
                got.manifest.choose(platform.parse("linux/s390x"))
            sub = await c.get_manifest(repo.with_digest(chosen.digest))
            assert sub.media_type == oci.DOCKER_MANIFEST
            cfg = await (await c.open_blob(repo, sub.manifest.config.digest)).readall()
            assert oci.parse_config(cfg)["architecture"] == "arm64"
            # a client that accepts no lists gets the registry's amd64 fallback, digest computed by us
            single = await c.get_manifest(repo.with_tag("latest"), accept=(oci.DOCKER_MANIFEST,))
            assert single.media_type == oci.DOCKER_MANIFEST and single.digest == amd.digest

    asyncio.run(main())


def test_not_found_errors(registry):
    async def main():
        async with RegistryClient() as c:
            with pytest.raises(NotFound, match=r"manifest unknown: 127\.0\.0\.1:\d+/nope/nothing:latest"):
                await c.get_manifest(f"{registry.domain}/nope/nothing")
            with pytest.raises(NotFound, match="blob unknown"):
                await c.open_blob(parse(f"{registry.domain}/nope/nothing"), "sha256:" + "0" * 64)
            assert await c.blob_exists(f"{registry.domain}/nope/nothing", "sha256:" + "0" * 64) is None
            with pytest.raises(InvalidArgument, match="invalid digest"):
                await c.open_blob(parse(f"{registry.domain}/nope/nothing"), "sha256:xyz")

    asyncio.run(main())


def test_cross_repository_mount(registry):
    img = make_image(seed="mount")
    src = parse(f"{registry.domain}/ketch/source:latest")
    dst = parse(f"{registry.domain}/ketch/dest:latest")

    async def main():
        async with RegistryClient() as c:
            await push_image(c, src, img)
            layer = img.layers[1]
            assert await c.blob_exists(dst, layer.digest) is None
            assert await c.mount_blob(dst, layer.digest, src) is True     # 201 Created
            assert await c.blob_exists(dst, layer.digest) == len(layer.data)
            # push_blob uses the mount when given a source
            assert await c.push_blob(dst, img.config.digest, len(img.config.data), img.config.data,
                                     mount_from=src) == "mounted"
            # mounting a blob the source does not have falls back (202) and reports False
            ghost = b"not pushed anywhere"
            assert await c.mount_blob(dst, oci.sha256_digest(ghost), src) is False

    asyncio.run(main())


def test_blob_not_matching_its_digest_is_refused(registry):
    img = make_image(seed="corrupt")
    ref = parse(f"{registry.domain}/ketch/corrupt:latest")

    async def main():
        async with RegistryClient() as c:
            await push_image(c, ref, img)
            layer = img.layers[1]
            path = registry.blob_data_path(layer.digest)
            bad = bytearray(layer.data)
            bad[len(bad) // 2] ^= 0xFF            # same size, different content
            with open(path, "wb") as f:
                f.write(bad)
            with pytest.raises(FailedPrecondition, match="digest mismatch"):
                async with await c.open_blob(ref, layer.digest, size=len(layer.data)) as r:
                    await r.readall()
            # a manifest whose stored bytes were altered is refused too
            mpath = registry.blob_data_path(img.digest)
            altered = img.manifest.replace(b'"schemaVersion":2', b'"schemaVersion": 2')
            with open(mpath, "wb") as f:
                f.write(altered)
            with pytest.raises(FailedPrecondition, match="digest"):
                await c.get_manifest(ref.with_digest(img.digest))

    asyncio.run(main())


def test_foreign_layer_from_urls_and_parallel_reads(registry):
    """A non-distributable layer is fetched from its URL (never pushed to the registry), the
    others come from the registry, all at once."""
    from aiohttp import web

    from .conftest import free_port, make_layer

    img = make_image(seed="foreign")
    foreign = make_layer({"windows/base": b"pretend this is licensed"})
    fdesc = oci.Descriptor(oci.DOCKER_LAYER_FOREIGN, oci.sha256_digest(foreign), len(foreign))
    ref = parse(f"{registry.domain}/ketch/foreign:1")
    served = []

    async def serve(request):
        served.append(request.headers.get("Authorization"))
        return web.Response(body=foreign)

    async def main():
        app = web.Application()
        app.router.add_get("/layer.tar.gz", serve)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with RegistryClient() as c:
                await push_image(c, ref, img)
                fdesc_u = oci.Descriptor(fdesc.media_type, fdesc.digest, fdesc.size,
                                         urls=(f"http://127.0.0.1:{port}/missing", f"http://127.0.0.1:{port}/layer.tar.gz"))
                assert fdesc_u.foreign
                descs = [fdesc_u] + [oci.Descriptor(b.media_type, b.digest, len(b.data)) for b in img.layers]

                async def fetch(d):
                    async with await c.open_layer(ref, d) as r:
                        return await r.readall()

                got = await asyncio.gather(*(fetch(d) for d in descs))
                assert got == [foreign] + [b.data for b in img.layers]
                assert served == [None]          # no credentials to foreign hosts
                # a foreign layer whose urls all fail and that the registry lacks: NotFound naming both
                bad = oci.Descriptor(fdesc.media_type, oci.sha256_digest(b"x"), 1,
                                     urls=(f"http://127.0.0.1:{port}/missing",))
                with pytest.raises(NotFound, match="foreign urls failed"):
                    await c.open_layer(ref, bad)
        finally:
            await runner.cleanup()

    asyncio.run(main())
