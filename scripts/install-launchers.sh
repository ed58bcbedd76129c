#!/usr/bin/env bash
# Puts Ketch's lean launchers on PATH. They start an interpreter with -IS (no site scan, about
# 15 ms) and put the repository and the venv's site-packages on sys.path themselves.
#
# The interpreter is a private copy of /usr/bin/python3 marked immutable (chattr +i): a container
# that gets hold of the runtime's /proc/PID/exe (CVE-2019-5736: e.g. a `#!/proc/self/exe` script
# run by `exec`) cannot open it for writing, even as root with CAP_DAC_OVERRIDE; only
# CAP_LINUX_IMMUTABLE, which no default container has, could lift the flag.
set -euo pipefail
bindir=${1:-/usr/local/bin}
libdir=${KETCH_LIBDIR:-/usr/local/lib/ketch}
repo=$(cd "$(dirname "$0")/.." && pwd)
site=$(ls -d "$repo"/.venv/lib/python3*/site-packages | head -n1)
src=$(readlink -f /usr/bin/python3)
py="$libdir/python3"
mkdir -p "$bindir" "$libdir"
if ! cmp -s "$src" "$py" 2>/dev/null; then
  [ -e "$py" ] && chattr -i "$py" 2>/dev/null || true
  cp "$src" "$py.tmp" && chmod 0755 "$py.tmp" && mv -f "$py.tmp" "$py"
fi
if ! chattr +i "$py" 2>/dev/null; then
  echo "warning: cannot mark $py immutable (filesystem without attributes?)" >&2
fi
write() {  # name module
  cat > "$bindir/$1.tmp" <<EOT
#!$py -IS
import sys
sys.path[:0] = ["$repo", "$site"]
from $2 import main
sys.exit(main())
EOT
  chmod 0755 "$bindir/$1.tmp"
  mv -f "$bindir/$1.tmp" "$bindir/$1"
}
write ketch-runtime ketch.runtime.cli
for extra in "ketch ketch.cli.main" "ketchd ketch.daemon.main"; do
  set -- $extra
  mod_path="$repo/$(echo "$2" | tr . /).py"
  if [ -f "$mod_path" ]; then write "$1" "$2"; fi
done
