#!/usr/bin/env python3
"""Storage, side by side: `commit` of a container that changed 10,000 small files, Ketch against podman.

    sudo .venv/bin/python bench/storage.py [-n RUNS] [--dirs 100 --files 100] [--ketch-runtime ketch-runtime]

What it measures (section "commit"): one container per tool, made from the same busybox image (Ketch's
base image, saved and loaded into podman, as bench/engine.py does), writes DIRS x FILES small files
(`echo` of ~50 bytes each, 10,000 by default) into its root, then keeps running; the wall time of the
whole commit command (`ketch commit C`, `podman commit C`: CLI start, the layer made from the container's
upper dir, stored and registered as an image) is taken RUNS times, interleaved (ketch, podman, ketch,
...), after one warm-up each, and each new image is removed between runs (not timed). Two pairs:

- the container paused during the commit: `ketch commit` (Docker's default) and `podman commit --pause`;
- not paused: `ketch commit --pause=false` and `podman commit` (podman's default).

Reported: median, min, max, and Ketch's median as a ratio of podman's; the size of the layer each one
stored. The tools:

- ketchd (bench/engine.py's Ketch): own data root, exec root, socket, cgroup parent; the real image
  service (content store + overlay snapshots);
- podman (bench/engine.py's Podman): own --root/--runroot/--tmpdir, `--cgroup-manager=cgroupfs
  --events-backend=file --runtime runc`, the container run with `--ulimit nofile=1024:1024 --ulimit
  nproc=4096:4096` (podman's defaults are above this host's limits, see bench/engine.py).

Everything is made under one temporary directory and removed at the end, containers, images and
the cgroups the run made included.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine import (  # noqa: E402
    PODMAN,
    Ketch,
    Podman,
    _rmdir_tree_everywhere,
    _top_cgroups,
    _umount_under,
    sh,
)

NAME = "bench-commit"


def writer_script(dirs: int, files: int) -> str:
    return (f"i=0; while [ $i -lt {dirs} ]; do mkdir -p /data/d$i; j=0; while [ $j -lt {files} ]; do "
            f"echo 0123456789abcdef0123456789abcdef0123456789abcdef > /data/d$i/f$j; j=$((j+1)); done; "
            f"i=$((i+1)); done; touch /tmp/.done; exec sleep 3600")


def wait_done(cli, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        if subprocess.run(cli("exec", NAME, "test", "-e", "/tmp/.done"), capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("the writer did not finish")


def timed(argv) -> tuple[float, str]:
    t = time.perf_counter()
    r = sh(argv, timeout=900)
    return time.perf_counter() - t, r.stdout.strip().splitlines()[-1]


class KetchCommit:
    name = "ketch"

    def __init__(self, k: Ketch):
        self.k = k

    def setup(self, script):
        sh(self.k.cli("run", "-d", "--name", NAME, "--network", "none", "busybox", "sh", "-c", script))
        wait_done(self.k.cli)

    def commit(self, pause: bool):
        return self.k.cli("commit", *([] if pause else ["--pause=false"]), NAME)

    def remove(self, image_id):
        sh(self.k.cli("rmi", image_id), check=False)

    def layer_size(self, image_id):
        from ketch.images import ImageService
        svc = ImageService(self.k.data)
        _, rec = svc.resolve(image_id)
        return svc.manifest(rec).layers[-1].size


class PodmanCommit:
    name = "podman"

    def __init__(self, p: Podman):
        self.p = p

    def setup(self, script):
        sh(self.p.cli("run", "-d", "--name", NAME, "--network=none", *self.p.ulimits, "busybox", "sh", "-c", script))
        wait_done(self.p.cli)

    def commit(self, pause: bool):
        return self.p.cli("commit", "-q", *(["--pause"] if pause else []), NAME)

    def remove(self, image_id):
        sh(self.p.cli("rmi", image_id), check=False)

    def layer_size(self, image_id):
        info = json.loads(sh(self.p.cli("image", "inspect", image_id)).stdout)[0]
        parent = json.loads(sh(self.p.cli("image", "inspect", "busybox")).stdout)[0]
        return info["Size"] - parent["Size"]


def section_commit(tools, runs: int, files: int) -> None:
    print(f"commit of a container that changed {files} small files: wall time of the command, {runs} interleaved "
          f"runs (+1 warm-up each)", flush=True)
    for pause in (True, False):
        label = "paused (ketch commit | podman commit --pause)" if pause else \
            "not paused (ketch commit --pause=false | podman commit)"
        times: dict[str, list[float]] = {t.name: [] for t in tools}
        sizes: dict[str, int] = {}
        for i in range(runs + 1):
            for t in tools:
                dt, image_id = timed(t.commit(pause))
                if i == 0:
                    sizes[t.name] = t.layer_size(image_id)
                else:
                    times[t.name].append(dt)
                t.remove(image_id)
        ref = statistics.median(times["podman"]) if "podman" in times else None
        print(f"\n{label}")
        print(f"{'tool':<10}{'median s':>10}{'min':>8}{'max':>8}{'layer MB':>10}  {'x podman':>9}")
        for t in tools:
            v = times[t.name]
            m = statistics.median(v)
            ratio = f"{m / ref:>9.2f}" if ref else f"{'-':>9}"
            print(f"{t.name:<10}{m:>10.3f}{min(v):>8.3f}{max(v):>8.3f}{sizes[t.name] / 1e6:>10.1f}  {ratio}",
                  flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=7)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--files", type=int, default=100, help="files per directory")
    ap.add_argument("--ketch-runtime", default="ketch-runtime")
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    base = tempfile.mkdtemp(prefix="ketch-bench-storage-")
    cgroups_before = _top_cgroups()
    owners = []
    try:
        k = Ketch(os.path.join(base, "ketch"), args.ketch_runtime)
        k.make_image()
        k.start()
        owners.append(k)
        tools = [KetchCommit(k)]
        if not args.no_podman and PODMAN:
            tar = os.path.join(base, "busybox.tar")
            sh(k.cli("save", "-o", tar, "busybox"))
            p = Podman(os.path.join(base, "podman"))
            p.load(tar)
            owners.append(p)
            tools.append(PodmanCommit(p))
        script = writer_script(args.dirs, args.files)
        for t in tools:
            t.setup(script)
        section_commit(tools, args.runs, args.dirs * args.files)
    finally:
        for o in owners:
            try:
                o.stop()
            except Exception as e:  # keep cleaning the others
                print(f"cleanup: {e}", file=sys.stderr)
        _umount_under(base)
        shutil.rmtree(base, ignore_errors=True)
        if "libpod_parent" not in cgroups_before:
            _rmdir_tree_everywhere("libpod_parent")


if __name__ == "__main__":
    main()
