"""What a container changed: its overlay upper dir read against the layers below (``docker diff``).

    changes(upper, lowers) -> [("/path", kind)]    kind: MODIFIED 0, ADDED 1, DELETED 2

The upper dir holds exactly what the container wrote: new and copied-up entries, whiteouts
(char device 0/0: a lower entry deleted) and opaque directories (``trusted.overlay.opaque=y``:
a directory whose lower contents are all hidden, as ``rm -rf d && mkdir d`` leaves it). Each
upper entry is looked up in the lowers' merged view (top first, a lower layer's own whiteouts
and opaque directories respected): absent there, it was added; present, modified; a whiteout
of an entry present below is a deletion. As dockerd (moby's archive.changes): a directory that
is only a copied-up parent (same size, mode and mtime as below) is not itself a change, but
the parent of an added or deleted entry is always reported modified; the order is a pre-order
walk with names sorted, so a directory comes before its entries.

Where dockerd reports an opaque directory as deleted and its new contents as added, this
reports what the merged view shows: the directory modified (or added), every lower entry it
hides deleted, and entries written again inside it modified.

The walk of the upper dir goes by directory fds with O_NOFOLLOW (a running container may swap
a directory for a symlink meanwhile: it is read as a symlink, never followed onto the host).
"""

from __future__ import annotations

import os
import stat

from ketch.archive.apply import OVERLAY_OPAQUE_XATTR

MODIFIED, ADDED, DELETED = 0, 1, 2
KIND_LETTER = {MODIFIED: "C", ADDED: "A", DELETED: "D"}

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class LowerView:
    """The merged view of committed layer dirs (top first), looked up path by path."""

    def __init__(self, lowers):
        self.lowers = list(lowers)
        self._st: dict[tuple[int, str], os.stat_result | None] = {}
        self._opq: dict[tuple[int, str], bool] = {}

    def _lstat(self, i: int, rel: str) -> os.stat_result | None:
        key = (i, rel)
        if key not in self._st:
            try:
                self._st[key] = os.lstat(os.path.join(self.lowers[i], rel))
            except (FileNotFoundError, NotADirectoryError):
                self._st[key] = None
        return self._st[key]

    def _opaque(self, i: int, rel: str) -> bool:
        key = (i, rel)
        if key not in self._opq:
            try:
                self._opq[key] = os.getxattr(os.path.join(self.lowers[i], rel), OVERLAY_OPAQUE_XATTR,
                                             follow_symlinks=False) == b"y"
            except OSError:
                self._opq[key] = False
        return self._opq[key]

    def lookup(self, rel: str) -> os.stat_result | None:
        """lstat of ``rel`` (no leading slash) as the lowers' overlay shows it; None if absent."""
        parts = rel.split("/")
        for i in range(len(self.lowers)):
            stop = False   # this layer hides everything below it at this path
            missing = False
            for n in range(1, len(parts)):
                st = self._lstat(i, "/".join(parts[:n]))
                if st is None:
                    missing = True
                    break
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a whiteout or a non-directory over an ancestor
                if self._opaque(i, "/".join(parts[:n])):
                    stop = True
            if not missing:
                st = self._lstat(i, rel)
                if st is not None:
                    return None if _is_whiteout(st) else st
            if stop:
                return None
        return None

    def listdir(self, rel: str) -> list[str]:
        """The names directory ``rel`` holds in the merged view of the lowers."""
        names: set[str] = set()
        for low in self.lowers:
            try:
                names.update(os.listdir(os.path.join(low, rel)))
            except OSError:
                pass
        return sorted(n for n in names if self.lookup(f"{rel}/{n}" if rel else n) is not None)


def changes(upper: str, lowers, skip=frozenset()) -> list[tuple[str, int]]:
    """[("/path", kind)] of upper dir ``upper`` over committed layer dirs ``lowers`` (top first);
    ``skip``: relative paths left out, with what is below them (see placeholders)."""
    out: list[tuple[str, int]] = []
    view = LowerView(lowers)
    changed_dirs: set[str] = set()
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _walk(fd, "", False, view, out, changed_dirs, frozenset(skip))
    finally:
        os.close(fd)
    return out


def _same_time(a: os.stat_result, b: os.stat_result) -> bool:
    """moby's sameFsTime: equal, or the same second when one of them has no sub-second part."""
    if a.st_mtime_ns == b.st_mtime_ns:
        return True
    return a.st_mtime_ns // 10**9 == b.st_mtime_ns // 10**9 and (a.st_mtime_ns % 10**9 == 0
                                                                  or b.st_mtime_ns % 10**9 == 0)


def _record(out, changed_dirs, path, kind, is_dir):
    if is_dir:
        changed_dirs.add(path)
    if kind in (ADDED, DELETED):
        parent = os.path.dirname(path)
        if parent != "/" and parent not in changed_dirs:
            out.append((parent, MODIFIED))
            changed_dirs.add(parent)
    out.append((path, kind))


def _walk(dfd: int, rel: str, hidden: bool, view: LowerView, out, changed_dirs, skip) -> None:
    """``hidden``: this directory or one above it is opaque, so lower entries it does not hold are gone."""
    names = set(os.listdir(dfd))
    gone = set(view.listdir(rel)) - names if hidden else set()
    for name in sorted(names | gone):
        r = f"{rel}/{name}" if rel else name
        path = "/" + r
        if r in skip:
            continue
        if name in gone:
            _record(out, changed_dirs, path, DELETED, False)
            continue
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        low = view.lookup(r)
        if _is_whiteout(st):
            if low is not None:
                _record(out, changed_dirs, path, DELETED, False)
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        opaque = False
        if is_dir:
            try:
                opaque = os.getxattr(f"/proc/self/fd/{dfd}/{name}", OVERLAY_OPAQUE_XATTR,
                                     follow_symlinks=False) == b"y"
            except OSError:
                opaque = False
        if low is None:
            _record(out, changed_dirs, path, ADDED, is_dir)
        elif (is_dir and stat.S_ISDIR(low.st_mode) and not opaque and st.st_size == low.st_size
              and st.st_mode == low.st_mode and _same_time(st, low)):
            pass  # a parent copied up for what is below it: not a change of its own
        else:
            _record(out, changed_dirs, path, MODIFIED, is_dir)
        if is_dir:
            try:
                cfd = os.open(name, _DIR, dir_fd=dfd)
            except OSError:
                continue  # replaced meanwhile
            try:
                _walk(cfd, r, hidden or opaque, view, out, changed_dirs, skip)
            finally:
                os.close(cfd)


def placeholders(upper: str, lowers, candidates) -> frozenset[str]:
    """Which of ``candidates`` (relative paths of mount points the engine makes: /etc/hosts, /proc,
    ...) are only that in ``upper``: an empty file or directory the image does not have, made by
    the runtime to mount over. Docker keeps these in an "init" layer under the container's; here
    they are left out of diff and commit. A parent directory holding nothing else, copied up only
    for them (same owner and mode as below, not opaque), is left out too."""
    view = LowerView(lowers)
    out: set[str] = set()
    for rel in candidates:
        rel = rel.strip("/")
        try:
            st = os.lstat(os.path.join(upper, rel))
        except OSError:
            continue
        if view.lookup(rel) is not None:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            out.add(rel)
        elif stat.S_ISDIR(st.st_mode) and not os.listdir(os.path.join(upper, rel)):
            out.add(rel)
    for rel in sorted(out, key=len):
        parent = os.path.dirname(rel)
        while parent:
            p = os.path.join(upper, parent)
            low = view.lookup(parent)
            try:
                st = os.lstat(p)
                names = os.listdir(p)
                opaque = os.getxattr(p, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
            except OSError as e:
                import errno
                if e.errno != errno.ENODATA:
                    break
                opaque = False
            if (low is None or not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(low.st_mode) or opaque
                    or (st.st_uid, st.st_gid, st.st_mode) != (low.st_uid, low.st_gid, low.st_mode)
                    or any(f"{parent}/{n}" not in out for n in names)):
                break
            out.add(parent)
            parent = os.path.dirname(parent)
    return frozenset(out)
