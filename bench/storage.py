#!/usr/bin/env python3
"""Storage, side by side: file I/O in a container's root, a volume and a bind mount against the host's,
and `commit` of a container that changed 10,000 small files, Ketch against podman.

    sudo .venv/bin/python bench/storage.py [-n RUNS] [--dirs 100 --files 100] [--ketch-runtime ketch-runtime]
                                           [--io-mib 1024] [--io-runs 5] [--fs disk|tmpfs] [--only io|commit]

Section "io": the same busybox commands time, inside a Ketch container and on the host (busybox's
`time`, wall clock of the command alone, container start excluded): `dd` writes IO_MIB MiB from
/dev/zero with `conv=fsync`, then reads it back with `iflag=direct` (past the page cache), and `tar -x`
unpacks an archive of DIRS x FILES small files; each in the container's root (overlay's upper dir),
in a named volume, in a bind mount of a host directory, and in a directory of the host, all on the
same file system (the data root's). IO_RUNS runs each, interleaved (the places' order reversed every
other round); medians and the ratio to the host's (and the ratio of the fastest runs, which the disk's
other writers move least).

Two `tar -x` rows: busybox tar, as root, looks up each entry's owner and group names, and its
getpwnam/getgrnam open and read /etc/passwd and /etc/group on every call: two more opens and reads
per entry, made in the container's root (overlay: each open of a lower file opens the file below
too) whichever place it extracts to, and on the host in the host's /etc. So the plain row carries
the container root's reads beside the place's writes (as much under runc and podman: docs/storage.md,
"File I/O in a container against the host's"); `tar -x --numeric-owner` leaves the lookups out and
is the place's own cost.

`--fs tmpfs` puts the whole run (data root, host directory, bind source) on a tmpfs of its own: no
disk under it, so what is left of a difference is what the container's mounts cost (this machine's
virtual disk answers the same fsync'd write in 0.56 s or 3.2 s from one run to the next, whoever
writes, which hides a 5% difference at any number of runs that fits here).

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
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine import (  # noqa: E402
    PODMAN,
    Ketch,
    Podman,
    Workspace,
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


def _busybox_time(err: str) -> float:
    """Seconds from busybox `time`'s "real 0m 1.23s" line."""
    for line in err.splitlines():
        if line.startswith("real"):
            m, _, sec = "".join(line.split()[1:]).partition("m")   # "real\t0m 1.23s"
            return int(m) * 60 + float(sec.rstrip("s"))
    raise RuntimeError(f"no time in: {err[-300:]}")


def section_io(k: Ketch, base: str, runs: int, mib: int, dirs: int, files: int, seccomp: str = "default") -> None:
    src = os.path.join(base, "io-src")
    if not os.path.exists(os.path.join(src, "files.tar")):      # made once for every profile's section
        os.makedirs(src)
        tree = os.path.join(base, "io-tree")
        for i in range(dirs):
            os.makedirs(os.path.join(tree, f"d{i}"))
            for j in range(files):
                with open(os.path.join(tree, f"d{i}", f"f{j}"), "w") as f:
                    f.write("0123456789abcdef0123456789abcdef0123456789abcdef\n")
        sh(["tar", "-cf", os.path.join(src, "files.tar"), "-C", tree, "."])
        shutil.rmtree(tree)
    host_dir = os.path.join(base, "io-host")
    bind_dir = os.path.join(base, "io-bind")
    for d in (host_dir, bind_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    sh(k.cli("volume", "create", "bench-io"))
    security = ["--security-opt", "seccomp=unconfined"] if seccomp == "unconfined" else []
    places = {"host": None, "container root": "/work", "volume": "/vol", "bind mount": "/bind"}
    # Each timed command runs after an untimed one of the same size whose result is removed: the
    # timed one then reuses memory the kernel just freed everywhere. On this VM a page not touched
    # for some seconds costs a hypervisor fault to get back (seen: the same 512 MiB write to a tmpfs
    # took 0.28 s right after an rm and 1.2 s in a fresh place), which would be charged to whichever
    # place happened to come after a pause.
    tests = {
        "dd write": "dd if=/dev/zero of={d}/big bs=1M count={mib} conv=fsync 2>/dev/null; rm {d}/big; "
                    "time dd if=/dev/zero of={d}/big bs=1M count={mib} conv=fsync",
        "dd read": "time dd if={d}/big of=/dev/null bs=1M iflag=direct",
        "tar -x small files": "mkdir -p {d}/t && tar -xf /src/files.tar -C {d}/t && rm -rf {d}/t && mkdir {d}/t && "
                              "time tar -xf /src/files.tar -C {d}/t",
        # the same without the owner names looked up: busybox tar opens and reads /etc/passwd and
        # /etc/group for every entry, which in a container are files of its root (overlay), not of
        # the place extracted to (see the docstring)
        "tar -x --numeric-owner": "rm -rf {d}/t; mkdir -p {d}/t && tar -xf /src/files.tar --numeric-owner -C {d}/t && "
                                  "rm -rf {d}/t && mkdir {d}/t && time tar -xf /src/files.tar --numeric-owner -C {d}/t",
    }
    results: dict[tuple[str, str], list[float]] = {}
    print(f"\nfile I/O: busybox dd of {mib} MiB (write with fsync, read with O_DIRECT) and tar -x of "
          f"{dirs * files} small files, {runs} runs each, containers with the {seccomp} seccomp profile; "
          f"seconds, median", flush=True)
    for i in range(runs):
        # the places in turn, the order reversed every other round: a place is not always the one
        # run right after another's container went away (its removal, its cgroup's freeing)
        for place, d in (list(places.items()) if i % 2 == 0 else list(places.items())[::-1]):
            if d is None:
                # the host: the same busybox commands in a host directory (and the tar from its source)
                script = "; ".join(t.format(d=host_dir, mib=mib).replace("/src/", src + "/") + " 2>&1"
                                   for t in tests.values())
                out = sh(["busybox", "sh", "-c", f"rm -rf {host_dir}/*; sleep 1; " + script]).stdout
            else:
                script = "; ".join(t.format(d=d, mib=mib) + " 2>&1" for t in tests.values())
                out = sh(k.cli("run", "--rm", "--network", "none", *security, "-v", "bench-io:/vol", "-v", f"{bind_dir}:/bind",
                               "-v", f"{src}:/src:ro", "busybox", "sh", "-c",
                               f"mkdir -p /work; rm -rf {d}/*; sleep 1; " + script), timeout=1800).stdout
            reals = [line for line in out.splitlines() if line.startswith("real")]
            if len(reals) != len(tests):
                raise RuntimeError(f"{place}: expected {len(tests)} timings, got: {out[-500:]}")
            for name, line in zip(tests, reals, strict=True):
                results.setdefault((place, name), []).append(_busybox_time(line))
        shutil.rmtree(bind_dir)
        os.makedirs(bind_dir)
    print(f"{'':<24}" + "".join(f"{p:>24}" for p in places))
    for name in tests:
        host = statistics.median(results[("host", name)])
        host_min = min(results[("host", name)])
        cells = []
        for place in places:
            m = statistics.median(results[(place, name)])
            fastest = min(results[(place, name)])
            cells.append(f"{m:.2f}" + (f" (x{m / host:.2f}, min x{fastest / host_min:.2f})"
                                       if place != "host" and host and host_min else ""))
        print(f"{name:<24}" + "".join(f"{c:>24}" for c in cells), flush=True)
    sh(k.cli("volume", "rm", "bench-io"), check=False)
    if mib:
        print(f"  dd throughput on the host: write {mib / statistics.median(results[('host', 'dd write')]):.0f} MiB/s, "
              f"read {mib / statistics.median(results[('host', 'dd read')]):.0f} MiB/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=7)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--files", type=int, default=100, help="files per directory")
    ap.add_argument("--ketch-runtime", default="ketch-runtime")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--io-mib", type=int, default=1024, help="size of the dd file, MiB")
    ap.add_argument("--io-runs", type=int, default=5)
    ap.add_argument("--fs", choices=("disk", "tmpfs"), default="disk",
                    help="where the whole run lives: the disk under /tmp, or a tmpfs of its own")
    ap.add_argument("--seccomp", default="default",
                    help="io: the containers' seccomp profile, default or unconfined, or both: default,unconfined")
    ap.add_argument("--only", choices=("io", "commit"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    with Workspace("ketch-bench-storage-") as ws:
        base = ws.base
        if args.fs == "tmpfs":
            sh(["mount", "-t", "tmpfs", "-o", f"size={max(4, 4 * args.io_mib // 1024 + 2)}g,mode=0755", "bench",
                base])
        print(f"everything on {args.fs} ({base})", flush=True)
        k = ws.own(Ketch(os.path.join(base, "ketch"), args.ketch_runtime))
        k.make_image()
        k.start()
        if args.only != "commit":
            for profile in args.seccomp.split(","):
                section_io(k, base, args.io_runs, args.io_mib, args.dirs, args.files, profile)
            if args.only == "io":
                return
        tools = [KetchCommit(k)]
        if not args.no_podman and PODMAN:
            tar = os.path.join(base, "busybox.tar")
            sh(k.cli("save", "-o", tar, "busybox"))
            p = ws.own(Podman(os.path.join(base, "podman")))
            p.load(tar)
            tools.append(PodmanCommit(p))
        script = writer_script(args.dirs, args.files)
        for t in tools:
            t.setup(script)
        section_commit(tools, args.runs, args.dirs * args.files)


if __name__ == "__main__":
    main()
