#!/usr/bin/env python3
"""Image build, side by side: `ketch build` against `podman build` (buildah inside podman) on the same
multi-stage Dockerfile, cold, fully cached, and after a one-file change.

    sudo .venv/bin/python bench/build.py [-n RUNS] [--files 3000] [--ketch-runtime ketch-runtime]

The Dockerfile (written into a temporary context with FILES small files under src/):

    FROM busybox AS deps                       stage 1
    WORKDIR /work
    COPY lib/ /work/lib/                       a few small files
    RUN --mount=type=cache,target=/cache ...   a cache-mounted RUN (fills and reads /cache)
    RUN ...                                    a RUN that writes 200 files
    FROM busybox                               stage 2
    ENV APP=/app
    COPY --from=deps /work/out /app/deps       from stage 1
    COPY src/ /app/src/                        FILES small files (~50 bytes each)
    RUN find /app/src -type f | wc -l > /app/count
    COPY main.sh /app/main.sh
    RUN sh /app/main.sh > /app/out
    CMD ["cat", "/app/out"]

Each round, interleaved (ketch, podman, for each phase): both tools' build images, intermediate
images and cache mounts are removed first (not timed), then

- cold: the first build (no cache; the base image is there);
- cached: the same build again, every step cached;
- one-file: one of the FILES small files under src/ changes content, the build again (the big COPY
  and every step after it run; the steps before it are cached).

Timed: the wall clock of the whole client command (`ketch build -q -t T --network none CTX`,
`podman build -q -t T --network none --pull=never ... CTX`). RUNS rounds; medians, min, max, and
Ketch's median as a ratio of podman's, then issue 12's targets (cold no slower than podman; cached
at most a third of podman's; one-file rebuild at most half) as met or not met.

The tools (bench/engine.py's): a ketchd of its own (own data root, exec root, socket, cgroup parent,
no default bridge), its busybox base image saved and loaded into podman; podman with its own
--root/--runroot/--tmpdir, `--cgroup-manager=cgroupfs --events-backend=file --runtime runc`, the build
with `--ulimit nofile=1024:1024 --ulimit nproc=4096:4096` (podman's defaults are above this host's
limits, see bench/engine.py), `--network none` (no CNI network is set up for the RUN steps, as for
Ketch's). Buildah's cache mounts live under its tmpdir's buildah-cache-*; they are removed with the
rest before a cold build. Everything is made under one temporary directory and removed at the end.
"""

import argparse
import glob
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine import (  # noqa: E402
    PODMAN,
    Ketch,
    Podman,
    Workspace,
    sh,
)

TAG = "bench-build:latest"

DOCKERFILE = """\
FROM busybox AS deps
WORKDIR /work
COPY lib/ /work/lib/
RUN --mount=type=cache,target=/cache sh -c 'for f in /work/lib/*; do n=$(basename $f); \
[ -e /cache/$n ] || cp $f /cache/$n; done; mkdir -p /work/out; cat /cache/* > /work/out/libs.txt'
RUN sh -c 'i=0; while [ $i -lt 200 ]; do echo gen $i > /work/out/g$i; i=$((i+1)); done'
FROM busybox
ENV APP=/app
COPY --from=deps /work/out /app/deps
COPY src/ /app/src/
RUN find /app/src -type f | wc -l > /app/count
COPY main.sh /app/main.sh
RUN sh /app/main.sh > /app/out
CMD ["cat", "/app/out"]
"""


def make_context(ctx: str, files: int) -> str:
    """The context; returns the path of the file a one-file change edits."""
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE)
    os.makedirs(os.path.join(ctx, "lib"))
    for i in range(5):
        with open(os.path.join(ctx, "lib", f"lib{i}.txt"), "w") as f:
            f.write(f"library {i}\n" * 20)
    per_dir = 100
    for i in range(files):
        d = os.path.join(ctx, "src", f"d{i // per_dir:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i % per_dir:03d}.txt"), "w") as f:
            f.write(f"file {i}: 0123456789abcdef0123456789abcdef\n")
    with open(os.path.join(ctx, "main.sh"), "w") as f:
        f.write("echo app: $(cat /app/count) files, $(wc -l < /app/deps/libs.txt) lib lines\n")
    return os.path.join(ctx, "src", "d000", "f000.txt")


class KetchBuild:
    def __init__(self, k: Ketch):
        self.k = k
        self.name = "ketch"

    def build(self, ctx):
        return self.k.cli("build", "-q", "-t", TAG, "--network", "none", ctx)

    def reset(self):
        sh(self.k.cli("rmi", "-f", TAG), check=False)
        sh(self.k.cli("image", "prune", "-f"), check=False)   # the intermediate images (the cache)
        shutil.rmtree(os.path.join(self.k.data, "build", "cache-mounts"), ignore_errors=True)
        shutil.rmtree(os.path.join(self.k.data, "build", "cache"), ignore_errors=True)

    def check(self):
        return sh(self.k.cli("run", "--rm", "--network", "none", TAG)).stdout.strip()


class PodmanBuild:
    def __init__(self, p: Podman):
        self.p = p
        self.name = "podman"

    def build(self, ctx):
        return self.p.cli("build", "-q", "-t", TAG, "--network", "none", "--pull=never", *self.p.ulimits, ctx)

    def reset(self):
        sh(self.p.cli("rmi", "-f", TAG), check=False)
        sh(self.p.cli("image", "prune", "-f"), check=False)
        for d in glob.glob(os.path.join(self.p.tmp, "buildah-cache-*")) + glob.glob("/var/tmp/buildah-cache-0"):
            shutil.rmtree(d, ignore_errors=True)

    def check(self):
        return sh(self.p.cli("run", "--rm", "--network=none", *self.p.ulimits, TAG)).stdout.strip()


def timed(argv) -> float:
    t = time.perf_counter()
    sh(argv, timeout=1800)
    return time.perf_counter() - t


PHASES = ("cold", "cached", "one-file")
TARGETS = {"cold": (1.0, "no slower than podman"), "cached": (1 / 3, "at most a third of podman's"),
           "one-file": (0.5, "at most half of podman's")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--ketch-runtime", default="ketch-runtime")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    if not PODMAN:
        sys.exit("podman is not installed")
    tools: list = []
    with Workspace("ketch-bench-build-") as ws:
        base = ws.base
        ctx = os.path.join(base, "context")
        os.makedirs(ctx)
        changed = make_context(ctx, args.files)
        with open(changed) as f:
            original = f.read()
        k = ws.own(Ketch(os.path.join(base, "ketch"), args.ketch_runtime))
        k.make_image()
        k.start()
        tar = os.path.join(base, "busybox.tar")
        sh(k.cli("save", "-o", tar, "busybox"))
        p = ws.own(Podman(os.path.join(base, "podman")))
        p.load(tar)
        tools = [KetchBuild(k), PodmanBuild(p)]
        print(f"build of a 2-stage Dockerfile (13 steps, a COPY of {args.files} small files, a cache-mounted RUN), "
              f"{args.runs} rounds, interleaved", flush=True)
        times: dict = {(t.name, ph): [] for t in tools for ph in PHASES}
        for r in range(args.runs):
            with open(changed, "w") as f:
                f.write(original)
            for t in tools:
                t.reset()
            for ph in PHASES:
                if ph == "one-file":
                    with open(changed, "w") as f:
                        f.write(original + f"changed in round {r}\n")
                for t in tools:
                    times[(t.name, ph)].append(timed(t.build(ctx)))
            outs = {t.name: t.check() for t in tools}
            if len(set(outs.values())) != 1:
                raise RuntimeError(f"the images differ: {outs}")
            print(f"round {r + 1}: " + "  ".join(f"{t.name} {ph} {times[(t.name, ph)][-1]:.2f}s"
                                              for ph in PHASES for t in tools) + f"  (runs: {outs['ketch']!r})",
                  flush=True)
        print(f"\n{'phase':<10}{'tool':<8}{'median s':>10}{'min':>8}{'max':>8}  {'ketch/podman':>12}")
        ratios = {}
        for ph in PHASES:
            med = {t.name: statistics.median(times[(t.name, ph)]) for t in tools}
            ratios[ph] = med["ketch"] / med["podman"]
            for t in tools:
                v = times[(t.name, ph)]
                ratio = f"{ratios[ph]:>12.2f}" if t.name == "ketch" else ""
                print(f"{ph:<10}{t.name:<8}{med[t.name]:>10.2f}{min(v):>8.2f}{max(v):>8.2f}  {ratio}")
        print("\nissue 12 targets:")
        for ph in PHASES:
            limit, words = TARGETS[ph]
            ok = ratios[ph] <= limit
            print(f"  {ph:<9} ketch {words}: ratio {ratios[ph]:.2f} (target <= {limit:.2f}): "
                  f"{'met' if ok else 'not met'}")


if __name__ == "__main__":
    main()
