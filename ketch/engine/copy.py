"""`docker cp`: stat, tar out, and untar into a path of a container's filesystem.

Paths are resolved as the container sees them, by the kernel (openat2 RESOLVE_IN_ROOT, in
ketch.archive): symlinks of the container, even one swapped in while we copy, cannot lead
outside the root. Archives coming in are hostile: every member's path
is resolved in the container's root the same way (absolute names and `..` cannot leave
the destination, a symlink from the archive or the image is followed in-root, never on
the host), files are opened with O_NOFOLLOW, device nodes are skipped.
"""

import base64
import json
import os
import stat as stat_mod
import tempfile
from datetime import datetime, timezone

# Go's os.FileMode type bits, which the docker CLI decodes
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHARDEV = 1 << 21
_GO_STICKY = 1 << 20


def go_mode(st_mode: int) -> int:
    m = stat_mod.S_IMODE(st_mode) & 0o777
    if stat_mod.S_ISDIR(st_mode):
        m |= _GO_DIR
    elif stat_mod.S_ISLNK(st_mode):
        m |= _GO_SYMLINK
    elif stat_mod.S_ISFIFO(st_mode):
        m |= _GO_PIPE
    elif stat_mod.S_ISSOCK(st_mode):
        m |= _GO_SOCKET
    elif stat_mod.S_ISCHR(st_mode):
        m |= _GO_DEVICE | _GO_CHARDEV
    elif stat_mod.S_ISBLK(st_mode):
        m |= _GO_DEVICE
    if st_mode & stat_mod.S_ISUID:
        m |= _GO_SETUID
    if st_mode & stat_mod.S_ISGID:
        m |= _GO_SETGID
    if st_mode & stat_mod.S_ISVTX:
        m |= _GO_STICKY
    return m


def path_stat(rootfs: str, path: str, extra: dict[str, str], follow_final: bool) -> dict:
    """Docker's stat of `path` in the container, resolved race-free inside its root."""
    from ketch.archive import stat_in_root
    root, rel = in_root(rootfs, path, extra)
    st, target = stat_in_root(root, rel, follow_final=follow_final)
    mtime = datetime.fromtimestamp(st.st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    name = os.path.basename(os.path.normpath(path)) or "/"
    return {"name": name, "size": st.st_size, "mode": go_mode(st.st_mode), "mtime": mtime, "linkTarget": target}


def stat_header(st: dict) -> str:
    return base64.b64encode(json.dumps(st).encode()).decode()


def in_root(rootfs: str, path: str, extra: dict[str, str]) -> tuple[str, str]:
    """(the root a path of the container lives under, the path inside it): a bind mount's source
    when `path` is in one (the longest match), else the container's root."""
    norm = os.path.normpath("/" + path.lstrip("/"))   # not "//x": POSIX normpath keeps a leading "//"
    best = None
    for dst in extra:
        if norm == dst or norm.startswith(dst.rstrip("/") + "/"):
            if best is None or len(dst) > len(best):
                best = dst
    if best is not None:
        return extra[best], "/" + norm[len(best):].lstrip("/")
    return rootfs, norm


def make_tar(rootfs: str, path: str, extra: dict[str, str], follow_final: bool) -> tempfile.SpooledTemporaryFile:
    """A tar of `path` named after its last component (as Docker's TarWithOptions rebase), read
    race-free inside the root it lives in (ketch.archive.create_archive)."""
    from ketch.archive import create_archive
    f = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    name = os.path.basename(os.path.normpath(path)) or "."
    if path.endswith("/.") or path == "/":
        name = "."
    root, rel = in_root(rootfs, path, extra)
    create_archive(root, rel, name, f, follow_final=follow_final)
    f.seek(0)
    return f


def extract_tar(fileobj, rootfs: str, path: str, extra: dict[str, str],
                no_overwrite_dir_non_dir: bool = False) -> None:
    """Untar into directory `path` of the container with the layer applier's race-free copy mode
    (ketch.archive.extract_archive): every path resolved by the kernel inside the root it lands
    in (the container's root, or a bind mount's source), no whiteout meaning."""
    from ketch.archive import extract_archive
    root, dest = rootfs, os.path.normpath("/" + path.lstrip("/"))
    best = None
    for target in extra:
        if os.path.isdir(extra[target]) and (dest == target or dest.startswith(target.rstrip("/") + "/")):
            if best is None or len(target) > len(best):
                best = target
    if best is not None:
        root, dest = extra[best], "/" + dest[len(best):].lstrip("/")
    extract_archive(fileobj, root, dest, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir)
