#!/usr/bin/env bash
# Puts Ketch's lean launchers on PATH. They start the host's python3 with -IS (no site scan, about
# 15 ms) and put the repository and the venv's site-packages on sys.path themselves.
#
# ketch-runtime's launcher is a shell and a Python script in one file: the shell part execs
# python3 through its read-only view (a read-only bind mount of the very file, made and kept
# current by ketch/runtime/sealed.py), so a container that gets hold of the runtime's
# /proc/PID/exe (CVE-2019-5736: e.g. a `#!/proc/self/exe` script run by `exec`) cannot open it for
# writing, and the interpreter stays the one Debian updates. Without a current view (after a
# reboot, or an upgrade of python3) it runs python3 itself, and the runtime mounts the view and
# re-execs through it before it enters any container.
set -euo pipefail
bindir=${1:-/usr/local/bin}
repo=$(cd "$(dirname "$0")/.." && pwd)
site=$(ls -d "$repo"/.venv/lib/python3*/site-packages | head -n1)
py=/usr/bin/python3
mkdir -p "$bindir"
# an earlier install's private immutable copy of python3 is not used any more
old=${KETCH_LIBDIR:-/usr/local/lib/ketch}/python3
if [ -e "$old" ]; then
  chattr -i "$old" 2>/dev/null || true
  rm -f "$old"
  rmdir "$(dirname "$old")" 2>/dev/null || true
fi
view=$(cd "$repo" && "$py" -IS -c 'import sys; sys.path.insert(0, "."); from ketch.runtime import sealed
print(sealed.ensure_view(sys.argv[1]))' "$py")
write() {  # name module
  {
    if [ "$1" = ketch-runtime ]; then
      echo '#!/bin/sh'
      echo "''':'"
      echo "[ $view -ef $py ] && exec $view -IS \"\$0\" \"\$@\""
      echo "exec $py -IS \"\$0\" \"\$@\""
      echo "'''"
    else
      echo "#!$py -IS"
    fi
    echo "import sys"
    echo "sys.path[:0] = [\"$repo\", \"$site\"]"
    echo "from $2 import main"
    echo "sys.exit(main())"
  } > "$bindir/$1.tmp"
  chmod 0755 "$bindir/$1.tmp"
  mv -f "$bindir/$1.tmp" "$bindir/$1"
}
write ketch-runtime ketch.runtime.cli
for extra in "ketch ketch.cli.main" "ketchd ketch.daemon.main"; do
  set -- $extra
  mod_path="$repo/$(echo "$2" | tr . /).py"
  if [ -f "$mod_path" ]; then write "$1" "$2"; fi
done
