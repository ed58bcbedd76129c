"""`docker cp`: stat, tar out, and untar into a path of a container's filesystem.

Paths are resolved as the container sees them (ketch.engine.rootpath): symlinks in the
image cannot lead outside the root. Archives coming in are hostile: every member's path
is resolved in the container's root the same way (absolute names and `..` cannot leave
the destination, a symlink from the archive or the image is followed in-root, never on
the host), files are opened with O_NOFOLLOW, device nodes are skipped.
"""

import base64
import json
import os
import stat as stat_mod
import tarfile
import tempfile
from datetime import datetime, timezone

from ketch.engine.rootpath import resolve
from ketch.errors import NotFound

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


def host_path(rootfs: str, path: str, extra: dict[str, str], follow_final: bool = False) -> str:
    """The host path for `path` in the container: bind mounts (`extra`) first, then the root."""
    norm = os.path.normpath("/" + path)
    best = None
    for dst in extra:
        if norm == dst or norm.startswith(dst.rstrip("/") + "/"):
            if best is None or len(dst) > len(best):
                best = dst
    if best is not None:
        rest = norm[len(best):].lstrip("/")
        return resolve(extra[best], rest, follow_final) if rest else extra[best]
    return resolve(rootfs, path, follow_final)


def path_stat(hp: str, path: str) -> dict:
    try:
        st = os.lstat(hp)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"Could not find the file {path} in container") from None
    target = os.readlink(hp) if stat_mod.S_ISLNK(st.st_mode) else ""
    mtime = datetime.fromtimestamp(st.st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    name = os.path.basename(os.path.normpath(path)) or "/"
    return {"name": name, "size": st.st_size, "mode": go_mode(st.st_mode), "mtime": mtime, "linkTarget": target}


def stat_header(st: dict) -> str:
    return base64.b64encode(json.dumps(st).encode()).decode()


def make_tar(hp: str, path: str) -> tempfile.SpooledTemporaryFile:
    """A tar of hp named after the last component of `path` (as Docker's TarWithOptions rebase)."""
    f = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    name = os.path.basename(os.path.normpath(path)) or "."
    if path.endswith("/.") or path == "/":
        name = "."
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(hp, arcname=name, recursive=True)
    f.seek(0)
    return f


def extract_tar(fileobj, rootfs: str, path: str, extra: dict[str, str],
                no_overwrite_dir_non_dir: bool = False) -> None:
    """Untar into directory `path` of the container with the layer applier's race-free copy mode
    (ketch.archive.extract_archive): every path resolved by the kernel inside the root it lands
    in (the container's root, or a bind mount's source), no whiteout meaning."""
    from ketch.archive import extract_archive
    root, dest = rootfs, os.path.normpath("/" + path)
    best = None
    for target in extra:
        if os.path.isdir(extra[target]) and (dest == target or dest.startswith(target.rstrip("/") + "/")):
            if best is None or len(target) > len(best):
                best = target
    if best is not None:
        root, dest = extra[best], "/" + dest[len(best):].lstrip("/")
    extract_archive(fileobj, root, dest, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir)
