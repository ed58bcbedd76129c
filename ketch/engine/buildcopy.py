"""COPY and ADD of a build step: which files, what they hash to, and the tar that puts them in place.

A build's COPY reads from a source root (the build context, an earlier stage's or an image's
root) and writes into the step's root, mounted. Both are hostile until checked: every source
path is resolved inside its root (`..` and symlinks cannot leave the context), the destination
is written by the archive extractor (`ketch.archive.extract_archive`, openat2 RESOLVE_IN_ROOT),
so an image's `/bin -> usr/bin` is followed as the container sees it and never on the host.

The rules are Docker's (BuildKit's where the classic builder is known to be wrong):

- a directory source copies its contents, not itself; a file source lands at `dest`, or at
  `dest/<name>` when `dest` ends in `/` or is a directory; several sources need a `dest/`;
- sources are globs (`*`, `?`, `[...]` within one path element, Go's filepath.Match) over the
  context after `.dockerignore`; a source that matches nothing is an error;
- files keep their mode and mtime; owners are 0:0 unless `--chown` (names resolved in the
  destination root's /etc/passwd and /etc/group, a user alone gives its uid as gid); `--chmod`
  sets the mode of every copied file and directory; missing destination directories are made
  0755 with the `--chown` owner; an existing destination directory keeps its metadata;
- ADD of a local tar (plain, gzip, bzip2, xz, zstd) unpacks it at `dest`; ADD of an http(s) URL
  is downloaded by the builder (ketch/engine/buildurl.py) and copied here as a plain file source;
- `--parents` (BuildKit's): each match keeps its path in the source root under `dest` (below a
  `/./` in the source only the part after it), globs may use `**`; the parent directories it
  needs are made as missing destination directories are.

The cache key of a COPY is `digest_sources`: for each copied entry its name in the copied set,
type, mode, uid, gid, size, link target and content digest, as Docker's tarsum v1 headers
(which leave mtimes out), so touching a file or changing a sibling outside the sources
invalidates nothing.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from ketch.archive import compression as cz
from ketch.build.dockerignore import PatternMatcher
from ketch.engine.rootpath import resolve
from ketch.errors import InvalidArgument, NotFound

URL_RE = re.compile(r"^(https?://|git@|git://)", re.IGNORECASE)


@dataclass
class Entry:
    """One thing to copy: `src` a host path (None for generated content), `rel` its name in the copied set."""
    rel: str
    src: str | None
    st: os.stat_result | None
    data: bytes | None = None


@dataclass
class Source:
    """A resolved COPY source: what was named, its entries, whether it is a directory or an archive to unpack."""
    name: str
    entries: list[Entry]
    is_dir: bool
    archive: str | None = None          # ADD: a local tar to unpack at dest
    keep: str | None = None             # --parents: the path it keeps under dest


def _glob_re(pattern: str, doublestar: bool = False) -> re.Pattern[str]:
    """Go's filepath.Match as a regex; with ``doublestar`` (`--parents`) an element `**` matches
    any number of elements, as BuildKit's include patterns."""
    if not doublestar or "**" not in pattern.split("/"):
        return re.compile(_glob_body(pattern) + r"\Z")
    els = pattern.split("/")
    body = ""
    for i, el in enumerate(els):
        last = i == len(els) - 1
        if el == "**":
            body += ".*" if last else "(?:[^/]+/)*"
        else:
            body += _glob_body(el) + ("" if last else "/")
    return re.compile(body + r"\Z")


def _glob_body(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise InvalidArgument(f"syntax error in pattern: {pattern}")
            body = pattern[i + 1:j]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _clean_rel(path: str) -> str:
    p = posixpath.normpath("/" + path).lstrip("/")
    return "" if p == "." else p


class SourceRoot:
    """A root to copy from: the context (with its .dockerignore) or a stage's or image's root."""

    def __init__(self, root: str, matcher: PatternMatcher | None = None, what: str = "build context"):
        self.root = os.path.realpath(root)
        self.matcher = matcher
        self.what = what

    def excluded(self, rel: str) -> bool:
        return bool(self.matcher and rel and self.matcher.excluded(rel))

    def host_path(self, rel: str, follow: bool = True) -> str:
        p = resolve(self.root, "/" + rel, follow_final=follow)
        if not (p == self.root or p.startswith(self.root + "/")):
            raise InvalidArgument(f"forbidden path outside the {self.what}: {rel}")
        return p

    def _skip_dir(self, rel: str) -> bool:
        return bool(self.matcher and self.matcher.excluded(rel) and self.matcher.can_skip_dir(rel))

    def _all(self) -> Iterator[str]:
        for top, dirs, files in os.walk(self.root):
            rel_top = os.path.relpath(top, self.root)
            rels = {name: (name if rel_top == "." else f"{rel_top}/{name}") for name in dirs + files}
            dirs[:] = sorted(d for d in dirs if not self._skip_dir(rels[d]))
            for name in dirs + sorted(files):
                if not self.excluded(rels[name]):
                    yield rels[name]

    def expand(self, source: str, doublestar: bool = False) -> list[str]:
        """The context paths a COPY source names (globs expanded), checked to stay inside."""
        raw = source
        if posixpath.normpath("/" + source) != "/" and posixpath.normpath(source).startswith(".."):
            raise InvalidArgument(f"forbidden path outside the {self.what}: {raw}")
        rel = _clean_rel(source)
        if any(ch in rel for ch in "*?["):
            rx = _glob_re(rel, doublestar)
            found = [p for p in self._all() if rx.match(p)]
            return found
        if rel and self.excluded(rel):
            return []
        p = self.host_path(rel)
        return [rel] if os.path.lexists(p) else []

    def walk(self, rel: str, excludes: PatternMatcher | None) -> Iterator[Entry]:
        """A directory's entries below it (names relative to it), parents first, links not followed."""
        base = self.host_path(rel)
        for top, dirs, files in os.walk(base):
            dirs.sort()
            sub = os.path.relpath(top, base)
            keep_dirs = []
            for name in sorted(dirs) + sorted(files):
                r = name if sub == "." else f"{sub}/{name}"
                ctx_rel = f"{rel}/{r}" if rel else r
                if excludes is not None and excludes.excluded(r):
                    continue
                p = os.path.join(top, name)
                st = os.lstat(p)
                if self.excluded(ctx_rel):
                    if name in dirs and not stat.S_ISLNK(st.st_mode) and not self._skip_dir(ctx_rel):
                        keep_dirs.append(name)   # an exception below it may bring something back
                    continue
                if name in dirs:
                    if stat.S_ISLNK(st.st_mode):
                        yield Entry(r, p, st)
                        continue
                    keep_dirs.append(name)
                yield Entry(r, p, st)
            dirs[:] = [d for d in dirs if d in keep_dirs]


def _pivot(name: str) -> tuple[str, int]:
    """`--parents`: the pattern a source names and how many leading elements of a match it drops
    (those before its `/./`, BuildKit's pivot: `./src/./foo/a` keeps `foo/a`)."""
    i = name.find("/./")
    if i < 0:
        return name, 0
    before, after = name[:i], name[i + 3:]
    if "**" in before.split("/"):
        raise InvalidArgument(f"COPY --parents {name}: `**` before the `/./` pivot is not supported")
    drop = _clean_rel(before)
    return f"{before}/{after}", len(drop.split("/")) if drop else 0


def resolve_sources(root: SourceRoot, names: list[str], *, add: bool, excludes: list[str] | None = None,
                    unpack: bool | None = None, verb: str = "COPY", parents: bool = False) -> list[Source]:
    """The sources of a COPY/ADD, each with its entries; NotFound when one names nothing.
    ``parents``: each keeps its path in the root (after a `/./` pivot) under the destination."""
    ex = PatternMatcher(excludes) if excludes else None
    out = []
    for name in names:
        if URL_RE.match(name):
            if add:   # the builder downloads http(s) URLs before; a git source is refused there
                raise InvalidArgument(f"ADD {name}: not a URL this builder downloads (http or https)")
            raise InvalidArgument(f"{verb} {name}: source can't be a URL for COPY")
        pattern, drop = _pivot(name) if parents else (name, 0)
        matches = root.expand(pattern, doublestar=parents)
        if not matches:
            raise NotFound(f"{verb} failed: file not found in {root.what}: stat {name}: file does not exist")
        for rel in matches:
            if ex is not None and ex.excluded(rel):
                continue
            keep = "/".join(rel.split("/")[drop:]) if parents else None
            p = root.host_path(rel)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                out.append(Source(name, list(root.walk(rel, ex)), True, keep=keep))
                continue
            base = posixpath.basename(rel) or posixpath.basename(p)
            if add and unpack is not False and stat.S_ISREG(st.st_mode) and is_archive(p):
                out.append(Source(name, [Entry(base, p, st)], False, archive=p, keep=keep))
                continue
            out.append(Source(name, [Entry(base, p, st)], False, keep=keep))
    if not out:
        raise NotFound(f"{verb} failed: no source files were specified")
    return out


def is_archive(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    kind = cz.detect(head[:8])
    if kind is not None:
        if kind == "gzip":
            # a gzip that is not a tar (a .gz of a file) is copied, not unpacked: look inside
            import gzip
            try:
                with gzip.open(path, "rb") as g:
                    inner = g.read(512)
            except OSError:
                return False
            return len(inner) >= 262 and inner[257:262] == b"ustar"
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def digest_sources(sources: list[Source], known: dict[str, str] | None = None) -> str:
    """The content digest of what a COPY copies (tarsum v1's headers and the contents; no mtimes).
    ``known``: files' sha256 by host path, already taken (the context's, as it was unpacked)."""
    h = hashlib.sha256()
    for s in sources:
        h.update(f"source {s.name} dir={int(s.is_dir)} archive={int(bool(s.archive))}"
                 f"{'' if s.keep is None else ' keep=' + s.keep}\n".encode())
        for e in s.entries:
            if e.data is not None:
                h.update(f"{e.rel}\0data\0{hashlib.sha256(e.data).hexdigest()}\n".encode())
                continue
            st = e.st
            assert st is not None and e.src is not None
            link = os.readlink(e.src) if stat.S_ISLNK(st.st_mode) else ""
            content = ((known or {}).get(e.src) or _file_digest(e.src)) if stat.S_ISREG(st.st_mode) else ""
            h.update(f"{e.rel}\0{stat.S_IFMT(st.st_mode):o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0"
                     f"{st.st_gid}\0{st.st_size if content else 0}\0{link}\0{content}\n".encode())
    return h.hexdigest()


# --- owners ---------------------------------------------------------------------------------------

def _lookup(root: str, file: str, name: str) -> int | None:
    try:
        with open(resolve(root, file), encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 3 and parts[0] == name:
                    return int(parts[2])
    except (OSError, ValueError):
        return None
    return None


def parse_chown(spec: str, root: str | None) -> tuple[int, int] | None:
    """`--chown=user[:group]` as uid, gid: numbers, or names in ``root``'s /etc/passwd and /etc/group."""
    if not spec:
        return None
    user, _, group = spec.partition(":")

    def one(value: str, file: str, kind: str) -> int:
        if value.isdigit():
            return int(value)
        found = _lookup(root, file, value) if root else None
        if found is None:
            raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: can't find {kind} for "
                                  f"{'user' if kind == 'uid' else 'group'} {value}: no such "
                                  f"{'user' if kind == 'uid' else 'group'}: {value}")
        return found
    uid = one(user, "/etc/passwd", "uid")
    gid = one(group, "/etc/group", "gid") if group else uid
    return uid, gid


def parse_chmod(spec: str) -> int | None:
    if not spec:
        return None
    try:
        mode = int(spec, 8)
    except ValueError:
        raise InvalidArgument(f"invalid chmod parameter: '{spec}'. it should be octal string and between 0 and "
                              f"07777") from None
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"invalid chmod parameter: '{spec}'. it should be octal string and between 0 and 07777")
    return mode


# --- the tar that does the copy -------------------------------------------------------------------

def _exists_dir(root: str, path: str) -> bool | None:
    """True: a directory in ``root`` (links followed in-root); False: something else; None: nothing."""
    from ketch.archive.create import stat_in_root
    try:
        st, _ = stat_in_root(root, path, follow_final=True)
    except (FileNotFoundError, NotADirectoryError, NotFound):
        return None
    except OSError:
        return None
    return stat.S_ISDIR(st.st_mode)


def plan_copy(dst_root: str, sources: list[Source], dest: str, workdir: str, *, verb: str = "COPY") \
        -> tuple[list[tuple[str, Entry]], list[tuple[str, str]], list[str]]:
    """Where each entry lands: ([(path in the root, entry)], [(archive, dest dir)], [missing dirs to make])."""
    if not dest.startswith("/"):
        dest = posixpath.join(workdir or "/", dest)
    wants_dir = dest.endswith("/") or dest.endswith("/.")
    dest = posixpath.normpath(dest)
    n_items = sum(len(s.entries) if not s.is_dir else 1 for s in sources)
    existing = _exists_dir(dst_root, dest)
    parents = any(s.keep is not None for s in sources)
    if (n_items > 1 or len(sources) > 1) and not wants_dir and existing is not True and not parents:
        raise InvalidArgument(f"When using {verb} with more than one source file, the destination must be a "
                              f"directory and end with a /")
    placed: list[tuple[str, Entry]] = []
    archives: list[tuple[str, str]] = []
    as_dir = wants_dir or existing is True or parents or any(s.is_dir or s.archive for s in sources)
    tops = [dest] if as_dir else [posixpath.dirname(dest)]
    for s in sources:
        if s.keep is not None:   # --parents: under dest at the path it keeps, its parents made
            at = posixpath.normpath(posixpath.join(dest, s.keep)) if s.keep else dest
            if s.archive:
                archives.append((s.archive, posixpath.dirname(at)))
                tops.append(posixpath.dirname(at))
            elif s.is_dir:
                tops.append(at)
                placed.extend((posixpath.join(at, e.rel), e) for e in s.entries)
            else:
                tops.append(posixpath.dirname(at))
                placed.extend((at, e) for e in s.entries)
            continue
        if s.archive:
            archives.append((s.archive, dest))
            continue
        if s.is_dir:
            for e in s.entries:
                placed.append((posixpath.join(dest, e.rel), e))
            continue
        for e in s.entries:
            placed.append((posixpath.join(dest, e.rel) if as_dir else dest, e))
    # directories to make: dest itself when it is one, and every missing ancestor of what lands
    need: list[str] = []
    seen: set[str] = set()
    for t in tops:
        chain = []
        p = t
        while p not in ("/", ""):
            chain.append(p)
            p = posixpath.dirname(p)
        for d in reversed(chain):
            if d in seen:
                continue
            seen.add(d)
            if _exists_dir(dst_root, d) is None:
                need.append(d)
    return placed, archives, need


def write_tar(placed: list[tuple[str, Entry]], dirs: list[str], owner: tuple[int, int] | None,
              chmod: int | None, now: float) -> tempfile.SpooledTemporaryFile:
    """The tar that makes ``dirs`` and puts each entry at its place (names relative to the root)."""
    uid, gid = owner or (0, 0)
    f = tempfile.SpooledTemporaryFile(max_size=16 << 20)
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in dirs:
            ti = tarfile.TarInfo(d.lstrip("/"))
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, 0o755, uid, gid, int(now)
            tf.addfile(ti)
        for path, e in placed:
            name = path.lstrip("/")
            if e.data is not None:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.uid, ti.gid, ti.mtime = len(e.data), 0o644, uid, gid, int(now)
                if chmod is not None:
                    ti.mode = chmod
                tf.addfile(ti, io.BytesIO(e.data))
                continue
            assert e.src is not None and e.st is not None
            st = e.st
            ti = tarfile.TarInfo(name)
            ti.mode = stat.S_IMODE(st.st_mode)
            ti.uid, ti.gid = uid, gid
            ti.mtime = int(st.st_mtime)
            if chmod is not None and not stat.S_ISLNK(st.st_mode):
                ti.mode = chmod
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif stat.S_ISLNK(st.st_mode):
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(e.src)
                tf.addfile(ti)
            elif stat.S_ISREG(st.st_mode):
                ti.size = st.st_size
                with open(e.src, "rb") as src:
                    tf.addfile(ti, src)
            elif stat.S_ISFIFO(st.st_mode):
                ti.type = tarfile.FIFOTYPE
                tf.addfile(ti)
            # sockets and device nodes of a context are not copied (Docker skips sockets; no devices)
    f.seek(0)
    return f


# --- unchanged files linked from the previous layer of the same COPY ------------------------------
#
# A rebuild after a one-file change reran a COPY of 3,000 files and paid a new inode for each
# (~0.7 ms on this kind of host's ext4, through overlay). A file whose copy in the layer the same
# COPY made last time (on the same parent) is exactly what this copy would write, content and every
# piece of metadata the layer's tar records, is hard-linked from that layer instead: the layer
# dirs are immutable (nothing writes into a committed snapshot; a container's write to a lower file
# is a copy-up), and the tar of the new layer, written from its dir, is byte for byte the one the
# copy would give. Both layers sit on the same parent, so no image's chain holds two layers
# sharing an inode.

def _same_content(fd: int, src: str, size: int) -> bool:
    with open(src, "rb") as f:
        left = size
        while left > 0:
            a = os.read(fd, min(left, 1 << 20))
            b = f.read(len(a)) if a else b""
            if not a or a != b:
                return False
            left -= len(a)
        return not os.read(fd, 1) and not f.read(1)


def linkable(placed: list[tuple[str, Entry]], prev_dir: str, owner: tuple[int, int] | None,
             chmod: int | None) -> dict[str, tuple[int, int]]:
    """The placed regular files whose file at the same path in layer dir ``prev_dir`` is what the
    copy would make of them (write_tar, then the extractor): the same bytes, size, mode, owner and
    whole-second mtime, and no xattrs; {path: (st_dev, st_ino) of that file}. Paths placed twice
    (a later source overwrites) are never linked; nothing in ``prev_dir`` is followed through a
    symlink."""
    from collections import Counter

    from ketch.archive.apply import open_beneath
    uid, gid = owner or (0, 0)
    count = Counter(p for p, _ in placed)
    out: dict[str, tuple[int, int]] = {}
    inodes: set[tuple[int, int]] = set()
    dfd = os.open(prev_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path, e in placed:
            st = e.st
            if e.data is not None or st is None or e.src is None or not stat.S_ISREG(st.st_mode) or count[path] > 1:
                continue
            try:
                fd = open_beneath(dfd, path.lstrip("/"), os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                pst = os.fstat(fd)
                key = (pst.st_dev, pst.st_ino)
                mode = chmod if chmod is not None else stat.S_IMODE(st.st_mode)
                if (stat.S_ISREG(pst.st_mode) and stat.S_IMODE(pst.st_mode) == mode
                        and (pst.st_uid, pst.st_gid) == (uid, gid) and pst.st_size == st.st_size
                        and pst.st_mtime_ns == int(st.st_mtime) * 1_000_000_000 and key not in inodes
                        and not os.listxattr(fd) and _same_content(fd, e.src, st.st_size)):
                    out[path] = key
                    inodes.add(key)
            finally:
                os.close(fd)
    finally:
        os.close(dfd)
    return out


def unreachable(upper: str, links: dict[str, tuple[int, int]]) -> set[str]:
    """The paths of ``links`` whose parent is not a real directory (every component, no symlink) in
    upper dir ``upper``: there the extractor, following the root's symlinks, would put them
    elsewhere, and they are copied through the mounted root instead. Reads only (``upper`` may be
    mounted)."""
    from ketch.archive.apply import open_beneath
    ok: dict[str, bool] = {}
    out = set()
    rootfd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in links:
            parent = posixpath.dirname(path).strip("/")
            if parent not in ok:
                try:
                    os.close(open_beneath(rootfd, parent or ".", os.O_PATH | os.O_DIRECTORY))
                    ok[parent] = True
                except OSError:
                    ok[parent] = False
            if not ok[parent]:
                out.add(path)
    finally:
        os.close(rootfd)
    return out


def link_into(upper: str, prev_dir: str, links: dict[str, tuple[int, int]], placed: list[tuple[str, Entry]],
              owner: tuple[int, int] | None, chmod: int | None) -> int:
    """Hard-link each file of ``links`` (linkable's, whose parents unreachable passed) from layer dir
    ``prev_dir`` into upper dir ``upper``, which no overlay mounts any more; a file that is no longer
    the one checked there (the layer was removed meanwhile) is written instead, as the extractor
    writes it. Each parent keeps the mtime the copy gave it. Returns how many were linked."""
    from ketch.archive.apply import open_beneath
    uid, gid = owner or (0, 0)
    entries = dict(placed)
    parents: dict[str, tuple[int, int]] = {}   # parent -> (its fd, its mtime_ns before)
    linked = 0
    rootfd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    prevfd = os.open(prev_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path, key in links.items():
            parent, name = posixpath.split(path.strip("/"))
            if parent not in parents:
                pfd = open_beneath(rootfd, parent or ".", os.O_RDONLY | os.O_DIRECTORY)
                parents[parent] = (pfd, os.fstat(pfd).st_mtime_ns)
            pfd = parents[parent][0]
            try:
                fd = open_beneath(prevfd, path.lstrip("/"), os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                fd = None
            try:
                pst = os.fstat(fd) if fd is not None else None
                if pst is not None and (pst.st_dev, pst.st_ino) == key:
                    try:
                        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=pfd, follow_symlinks=True)
                        linked += 1
                        continue
                    except OSError as err:   # too many links already, another file system: written instead
                        if err.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM):
                            raise
            finally:
                if fd is not None:
                    os.close(fd)
            e = entries[path]
            assert e.src is not None and e.st is not None
            mode = chmod if chmod is not None else stat.S_IMODE(e.st.st_mode)
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=pfd)
            try:
                with open(e.src, "rb") as src:
                    while chunk := src.read(1 << 20):
                        mv = memoryview(chunk)
                        while mv:
                            mv = mv[os.write(out, mv):]
                os.fchown(out, uid, gid)
                os.fchmod(out, mode)  # after chown, which clears setuid/setgid
                os.utime(out, ns=(int(e.st.st_mtime) * 1_000_000_000,) * 2)
            finally:
                os.close(out)
    finally:
        for pfd, mtime in parents.values():
            try:
                os.utime(pfd, ns=(mtime, mtime))
            finally:
                os.close(pfd)
        os.close(rootfd)
        os.close(prevfd)
    return linked
