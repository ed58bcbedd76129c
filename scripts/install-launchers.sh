#!/usr/bin/env bash
# Puts Ketch's lean launchers on PATH: they start /usr/bin/python3 with -I -S (no site scan,
# about 15 ms) and put the repository and the venv's site-packages on sys.path themselves.
set -euo pipefail
bindir=${1:-/usr/local/bin}
repo=$(cd "$(dirname "$0")/.." && pwd)
site=$(ls -d "$repo"/.venv/lib/python3*/site-packages | head -n1)
mkdir -p "$bindir"
write() {  # name module
  cat > "$bindir/$1" <<EOT
#!/usr/bin/python3 -IS
import sys
sys.path[:0] = ["$repo", "$site"]
from $2 import main
sys.exit(main())
EOT
  chmod 0755 "$bindir/$1"
}
write ketch-runtime ketch.runtime.cli
for extra in "ketch ketch.cli.main" "ketchd ketch.daemon.main"; do
  set -- $extra
  mod_path="$repo/$(echo "$2" | tr . /).py"
  if [ -f "$mod_path" ]; then write "$1" "$2"; fi
done
