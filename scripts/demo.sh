#!/usr/bin/env bash
# `make run`: a container from the local busybox base, run by ketch-runtime (no network needed).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
demo=${KETCH_DEMO_DIR:-/var/lib/ketch/demo}
rm -rf "$demo/bundle"
mkdir -p "$demo/bundle"
KETCH_REPO="$repo" "$repo/.venv/bin/python" - "$demo/bundle" <<'PY'
import json, os, sys
sys.path.insert(0, os.environ.get("KETCH_REPO", "."))
from tests.helpers import make_busybox_rootfs, base_config
bundle = sys.argv[1]
make_busybox_rootfs(os.path.join(bundle, "rootfs"))
cfg = base_config(["sh", "-c", "echo; echo \"hello from a Ketch container: $(hostname), pid $$, $(id)\"; "
                   "echo 'its processes:'; ps; echo 'its root:'; ls /"])
cfg["hostname"] = "ketch-demo"
cfg["linux"]["cgroupsPath"] = "/ketch/demo"
json.dump(cfg, open(os.path.join(bundle, "config.json"), "w"), indent=1)
PY
cd "$demo/bundle"
exec ketch-runtime run --bundle "$demo/bundle" "ketch-demo-$$"
