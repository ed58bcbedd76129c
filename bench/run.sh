#!/usr/bin/env bash
# `make bench`: every side-by-side benchmark, one after another (as root; a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
echo "== OCI runtime: create/start/wait/delete of true (ketch-runtime vs runc vs crun)"
$py bench/runtime_lifecycle.py -n 30
echo
echo "== image pull from a local registry (ketch vs skopeo vs podman), disk use of shared layers"
$py bench/pull.py --runs 3
echo
echo "== engine: run --rm latency and 100 idle containers (ketch vs podman vs docker)"
$py bench/engine.py -n 15 --idle 100
echo
echo "== network: run --rm on the default network vs none, iperf3 throughput, connection rate (ketch vs podman)"
$py bench/network.py
echo
echo "== build: cold, cached and one-file rebuild of a multi-stage Dockerfile (ketch build vs podman build)"
$py bench/build.py -n 5
