#!/usr/bin/env python3
"""Start latency of OCI runtimes, side by side: create, start, wait, delete of `true` on one bundle.

Usage: python3 bench/runtime_lifecycle.py [-n RUNS] [--runtimes ketch-runtime,runc,crun] [--in-process]

The driver is a child subreaper, so each container's init (reparented to it when the runtime's
create exits) is reaped here the moment it exits: "wait" costs the same for every runtime.
Runs are interleaved (ketch, runc, crun, ketch, ...) so drift on the machine hits all alike.
Prints each runtime's median, min and max in milliseconds and the ratio to ketch-runtime.
With --in-process a row "ketch (as ketchd)" is added: create through the command line, start and
delete as ketchd does them (ketch.runtime.container called in its own process, no interpreter to
start); the ratios stay against ketch-runtime's command line.
"""

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from tests.helpers import base_config, make_busybox_rootfs  # noqa: E402

PHASES = ("create", "start", "wait", "delete")


IN_PROCESS = "ketch (as ketchd)"


def lifecycle(rt, root, bundle, cid, phases, in_process=False):
    pidfile = os.path.join(bundle, f"{cid}.pid")
    t0 = time.perf_counter()
    subprocess.run([rt, "--root", root, "create", "--bundle", bundle, "--pid-file", pidfile, cid], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    t1 = time.perf_counter()
    pid = int(open(pidfile).read())
    if in_process:
        from ketch.runtime import container
        container.start(root, cid)
    else:
        subprocess.run([rt, "--root", root, "start", cid], check=True, stdin=subprocess.DEVNULL)
    t2 = time.perf_counter()
    os.waitpid(pid, 0)
    t3 = time.perf_counter()
    if in_process:
        container.delete(root, cid)
    else:
        subprocess.run([rt, "--root", root, "delete", cid], check=True, stdin=subprocess.DEVNULL)
    t4 = time.perf_counter()
    for name, a, b in zip(PHASES, (t0, t1, t2, t3), (t1, t2, t3, t4)):
        phases[name].append((b - a) * 1000)
    return (t4 - t0) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--runtimes", default="ketch-runtime,runc,crun")
    ap.add_argument("--in-process", action="store_true", help="add ketchd's way: start and delete in-process")
    args = ap.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)          # PR_SET_CHILD_SUBREAPER
    runtimes = [r for r in args.runtimes.split(",") if shutil.which(r)]
    tmp = tempfile.mkdtemp(prefix="ketch-bench-rt-")
    parent = f"ketch-bench-{uuid.uuid4().hex[:6]}"
    try:
        bundle = os.path.join(tmp, "bundle")
        make_busybox_rootfs(os.path.join(bundle, "rootfs"))
        cfg = base_config(["true"])
        cfg["linux"]["cgroupsPath"] = f"/{parent}/c"
        json.dump(cfg, open(os.path.join(bundle, "config.json"), "w"))
        labels = {r: r for r in runtimes}
        for r in list(runtimes):
            probe = subprocess.run([shutil.which(r), "--root", os.path.join(tmp, "probe"), "run", "--bundle", bundle,
                                    "probe"], capture_output=True, text=True)
            if probe.returncode != 0:
                # crun 1.8 refuses any hybrid host whose cgroup2 mount lists a controller (hugetlb here)
                print(f"note: {r} cannot run on this host, left out: {probe.stderr.strip()}")
                runtimes.remove(r)
        if args.in_process and "ketch-runtime" in runtimes:
            runtimes.insert(runtimes.index("ketch-runtime") + 1, IN_PROCESS)
            labels[IN_PROCESS] = IN_PROCESS
        times = {r: [] for r in runtimes}
        phases = {r: {p: [] for p in PHASES} for r in runtimes}
        for i in range(args.n + 2):
            for r in runtimes:
                ph = {p: [] for p in PHASES}
                exe = shutil.which("ketch-runtime" if r == IN_PROCESS else r)
                ms = lifecycle(exe, os.path.join(tmp, "state-" + r), bundle, f"b{i}", ph, in_process=r == IN_PROCESS)
                if i >= 2:                      # two warm-up rounds
                    times[r].append(ms)
                    for p in PHASES:
                        phases[r][p] += ph[p]
        base = statistics.median(times[runtimes[0]])
        print(f"lifecycle of `true` (create, start, wait, delete), {args.n} runs each, ms")
        print(f"{'runtime':<18} {'median':>8} {'min':>8} {'max':>8} {'ratio':>8}")
        for r in runtimes:
            med = statistics.median(times[r])
            print(f"{labels[r]:<18} {med:8.1f} {min(times[r]):8.1f} {max(times[r]):8.1f} {med / base:8.2f}")
        print("per phase (median ms): " + ", ".join(PHASES))
        for r in runtimes:
            print(f"  {labels[r]:<16} " + " ".join(f"{statistics.median(phases[r][p]):7.1f}" for p in PHASES))
        for r in runtimes[1:]:
            print(f"ketch-runtime / {labels[r]}: {base / statistics.median(times[r]):.2f}")
    finally:
        for top in [f"/sys/fs/cgroup/{c}/{parent}" for c in os.listdir("/sys/fs/cgroup")]:
            for sub, _d, _f in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
