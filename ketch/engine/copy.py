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
import shutil
import stat as stat_mod
import tarfile
import tempfile
from datetime import datetime, timezone

from ketch.engine.rootpath import resolve
from ketch.errors import InvalidArgument, NotFound

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
    """Untar into directory `path` of the container; every member is resolved in the root."""
    dest = host_path(rootfs, path, extra, follow_final=True)
    if not os.path.isdir(dest):
        if os.path.exists(dest):
            raise InvalidArgument("extraction point is not a directory")
        raise NotFound(f"Could not find the file {path} in container")
    base = os.path.normpath("/" + path)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for m in tar:
                name = os.path.normpath(m.name.lstrip("/"))
                if name == ".":
                    continue
                if name.startswith("../") or name == "..":
                    raise InvalidArgument(f"refused archive member {m.name!r}: path leaves the destination")
                cpath = os.path.join(base, name)
                target = host_path(rootfs, cpath, extra, follow_final=False)
                if no_overwrite_dir_non_dir:
                    if os.path.isdir(target) and not os.path.islink(target) and not m.isdir():
                        raise InvalidArgument(f"cannot overwrite directory \"{cpath}\" with non-directory")
                    if os.path.lexists(target) and not os.path.isdir(target) and m.isdir():
                        raise InvalidArgument(f"cannot overwrite non-directory \"{cpath}\" with directory")
                parent = os.path.dirname(target)
                if not os.path.isdir(parent):
                    os.makedirs(parent, exist_ok=True)
                if m.isdir():
                    if os.path.lexists(target) and not os.path.isdir(target):
                        os.unlink(target)
                    os.makedirs(target, exist_ok=True)
                elif m.isfile():
                    if os.path.lexists(target) and not os.path.isdir(target):
                        os.unlink(target)
                    src = tar.extractfile(m)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        # extractfile() returns a file for a regular member (m.isfile())
                        shutil.copyfileobj(src, out, 1 << 20)  # type: ignore[arg-type]
                elif m.issym():
                    if os.path.lexists(target):
                        os.unlink(target)
                    os.symlink(m.linkname, target)  # read later in-root, so any target is harmless
                elif m.islnk():
                    link_src = host_path(rootfs, os.path.join(base, os.path.normpath(m.linkname.lstrip("/"))),
                                         extra, follow_final=False)
                    if os.path.lexists(target):
                        os.unlink(target)
                    os.link(link_src, target, follow_symlinks=False)
                elif m.isfifo():
                    if os.path.lexists(target):
                        os.unlink(target)
                    os.mkfifo(target)
                else:
                    continue  # device nodes are not copied in
                if not m.issym():
                    os.chown(target, m.uid, m.gid, follow_symlinks=False)
                    os.chmod(target, m.mode & 0o7777)
                    os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
    except tarfile.TarError as e:
        raise InvalidArgument(f"bad archive: {e}") from None
