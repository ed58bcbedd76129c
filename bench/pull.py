#!/usr/bin/env python3
"""Pull benchmark: ketch vs skopeo copy vs podman pull, from a local docker-registry.

    sudo .venv/bin/python bench/pull.py [--mb 240] [--layers 6] [--runs 3] [--share-n 5]

1. Starts Debian's docker-registry on 127.0.0.1 (temp storage), pushes an image of
   --layers gzip layers of random data (--mb in total, so compression cannot help anyone).
2. Pulls it --runs times with each tool, each run into an empty store (ketch: a fresh data root;
   skopeo: `copy docker://... oci:<fresh dir>`; podman: `pull` with fresh --root/--runroot),
   and prints the median wall time, throughput and the ratio to ketch.
   skopeo only stores blobs (no unpack); ketch and podman also unpack every layer.
3. Disk use of N images sharing a base: pushes N images = the same 2 base layers + one small
   unique layer each, pulls them all with ketch, and compares the store's size with the sum of
   the unique blobs (compressed) and unique unpacked layers.
"""

import argparse
import asyncio
import gzip
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def layer(name, size):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo(f"data/{name}")
        ti.size = size
        tf.addfile(ti, io.BytesIO(os.urandom(size)))
    raw = buf.getvalue()
    from ketch.oci import digest as dg
    return gzip.compress(raw, compresslevel=1, mtime=0), str(dg.from_bytes(raw)), len(raw)


def push(domain, repo_tag, layers):
    from ketch.oci import digest as dg
    from ketch.registry import RegistryClient
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]}}).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": str(dg.from_bytes(cfg)), "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                  "digest": str(dg.from_bytes(b)), "size": len(b)} for b, _, _ in layers]}).encode()

    async def go():
        async with RegistryClient() as c:
            ref = f"{domain}/{repo_tag}"
            for b, _, _ in layers:
                await c.push_blob(ref, str(dg.from_bytes(b)), len(b), b)
            await c.push_blob(ref, str(dg.from_bytes(cfg)), len(cfg), cfg)
            await c.put_manifest(ref, man, "application/vnd.oci.image.manifest.v1+json")
    asyncio.run(go())


def du(path):
    total, seen = 0, set()
    for dp, dns, fns in os.walk(path):
        for n in dns + fns:
            st = os.lstat(os.path.join(dp, n))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def timed(cmd, prepare, env=None):
    prepare()
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=240)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--share-n", type=int, default=5)
    ap.add_argument("--tools", default="ketch,skopeo,podman")
    a = ap.parse_args()
    from pathlib import Path

    from tests.registry.conftest import start_registry
    work = Path(tempfile.mkdtemp(prefix="ketch-bench-", dir="/var/tmp"))
    reg = start_registry(work, name="registry")
    try:
        print(f"registry 127.0.0.1:{reg.port}; making {a.layers} layers, {a.mb} MB of random data ...", flush=True)
        per = a.mb * 1_000_000 // a.layers
        layers = [layer(f"l{i}", per) for i in range(a.layers)]
        push(reg.domain, "bench/big:1", layers)
        ref = f"{reg.domain}/bench/big:1"
        total = sum(len(b) for b, _, _ in layers)
        print(f"image: {len(layers)} layers, {total / 1e6:.1f} MB compressed\n", flush=True)
        ketch = [sys.executable, "-m", "ketch.cli.main"]
        env = dict(os.environ, PYTHONPATH=REPO)
        runroot = tempfile.mkdtemp(prefix="kbr-", dir="/tmp")
        tools = {
            "ketch pull": (lambda: ketch + ["--data-root", str(work / "k"), "pull", "-q", ref],
                           lambda: shutil.rmtree(work / "k", ignore_errors=True)),
            "skopeo copy (to oci:, no unpack)": (
                lambda: ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{work / 's'}:x"],
                lambda: shutil.rmtree(work / "s", ignore_errors=True)),
            "podman pull": (
                lambda: ["podman", "--root", str(work / "p"), "--runroot", runroot, "--storage-driver", "overlay",
                         "--cgroup-manager=cgroupfs", "--events-backend=file", "pull", "-q", "--tls-verify=false", ref],
                lambda: (subprocess.run(["podman", "--root", str(work / "p"), "--runroot", runroot,
                                         "--storage-driver", "overlay", "system", "reset", "-f"],
                                        capture_output=True),
                         shutil.rmtree(work / "p", ignore_errors=True))),
        }
        want = a.tools.split(",")
        results = {}
        for r in range(a.runs):   # interleaved, so drift in the machine's load hits every tool alike
            for name, (cmd, prep) in tools.items():
                if name.split()[0] not in want or not shutil.which(cmd()[0]):
                    continue
                results.setdefault(name, []).append(timed(cmd(), prep, env))
        base = statistics.median(results["ketch pull"])
        print(f"{'tool':36} {'median s':>9} {'MB/s':>8} {'vs ketch':>9}   runs")
        for name, ts in results.items():
            m = statistics.median(ts)
            print(f"{name:36} {m:9.2f} {total / 1e6 / m:8.1f} {m / base:8.2f}x   "
                  + " ".join(f"{t:.2f}" for t in ts))
        for name, (cmd, prep) in tools.items():
            prep()
        shutil.rmtree(runroot, ignore_errors=True)

        # ---- disk use of N images sharing a base
        print(f"\ndisk use of {a.share_n} images sharing a 2-layer base:")
        base_layers = [layer("base0", 20_000_000), layer("base1", 10_000_000)]
        uniques = [layer(f"u{i}", 1_000_000) for i in range(a.share_n)]
        for i, u in enumerate(uniques):
            push(reg.domain, f"bench/shared{i}:1", base_layers + [u])
        root = work / "share"
        for i in range(a.share_n):
            subprocess.run(ketch + ["--data-root", str(root), "pull", "-q", f"{reg.domain}/bench/shared{i}:1"],
                           check=True, stdout=subprocess.DEVNULL, env=env)
        blobs = du(root / "content" / "blobs")
        snaps = du(root / "snapshots" / "snapshots")
        uniq_blobs = sum(len(b) for b, _, _ in base_layers + uniques)
        uniq_tar = sum(n for _, _, n in base_layers + uniques)
        one_image = sum(len(b) for b, _, _ in base_layers + uniques[:1])
        print(f"  layer blobs on disk      {blobs / 1e6:8.2f} MB   unique layer blobs {uniq_blobs / 1e6:8.2f} MB "
              f"(+{(blobs - uniq_blobs) / 1e3:.0f} kB: configs, manifests, block rounding)")
        print(f"  unpacked snapshots       {snaps / 1e6:8.2f} MB   unique layer tars  {uniq_tar / 1e6:8.2f} MB")
        print(f"  snapshot count           {len(os.listdir(root / 'snapshots' / 'snapshots')):8d}      "
              f"unique layers      {len(base_layers) + len(uniques):8d}")
        print(f"  without sharing the blobs alone would take {a.share_n * one_image / 1e6:.1f} MB")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
