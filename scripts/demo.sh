#!/usr/bin/env bash
# `make run`: start ketchd (unless one answers already), make the local busybox base image
# from Debian's busybox-static (no network), and run a demo container through the daemon.
set -euo pipefail
sock=/run/ketch/ketch.sock
log=/var/log/ketchd.log
if ! ketch version >/dev/null 2>&1; then
  echo "starting ketchd (log: $log)"
  mkdir -p "$(dirname "$log")"
  setsid ketchd >>"$log" 2>&1 < /dev/null &
  for _ in $(seq 100); do
    ketch version >/dev/null 2>&1 && break
    sleep 0.1
  done
  ketch version >/dev/null 2>&1 || { echo "ketchd did not start; see $log" >&2; tail -20 "$log" >&2; exit 1; }
fi
echo "ketchd is serving on unix://$sock"
ketch image base
ketch run --rm --name ketch-demo --hostname ketch-demo busybox sh -c \
  'echo; echo "hello from a Ketch container: $(hostname), pid $$, $(id)"; echo "its network:"; ip -o -4 addr show eth0; echo "its processes:"; ps; echo "its root:"; ls /'
echo
echo "ketchd keeps running: try 'ketch run -it busybox sh', 'ketch ps', or the docker CLI with"
echo "  DOCKER_HOST=unix://$sock docker run --rm busybox echo hi"
