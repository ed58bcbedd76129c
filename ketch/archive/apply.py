"""Apply a layer tar to a directory, the way overlayfs wants it, without trusting the tar.

Safety rules (docs/storage.md):
- entry names are cleaned: a leading "/" is dropped, then the name is normalised; a name
  whose cleaned form climbs out of the root ("../x", "/../../x", "a/../../x") is refused;
- every parent directory is opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|...) from
  the root's fd, so a path through any symlink (one written earlier by this layer, or one
  pointing anywhere) is refused by the kernel, never followed;
- the final component is created with *at calls on that parent fd and O_NOFOLLOW/O_EXCL,
  after removing whatever the same layer had put there;
- symlink targets are stored verbatim (absolute or "../" targets are legal: nothing here
  ever opens through them); hard link targets are cleaned like names and must already exist
  in this layer, reached the same safe way;
- whiteouts become overlay form: ".wh.NAME" -> char device 0/0 NAME, ".wh..wh..opq" ->
  xattr trusted.overlay.opaque=y on the directory; a whiteout naming "." or ".." is refused;
- trusted.overlay.* xattrs from the tar are dropped (only whiteout conversion may set them).
Any refusal raises InvalidArgument naming the entry.
"""

import errno
import hashlib
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from typing import IO, Iterable, Sequence, cast

from ketch import space
from ketch.archive import compression as cz
from ketch.errors import InvalidArgument, NotFound
from ketch.linux import fs as lfs

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_OVERLAY_XATTR_PREFIX = "trusted.overlay."

_DIR_PATH = os.O_PATH | os.O_DIRECTORY
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ApplyResult:
    digest: str             # sha256 of the bytes read from the stream (the blob digest)
    diff_id: str            # sha256 of the uncompressed tar
    size: int               # bytes read from the stream
    uncompressed_size: int
    compression: str | None  # "gzip", "zstd" or None
    # directories the tar implied (made for an entry below them, no entry of their own), in the
    # order made; they take their metadata from the lower layers (fix_implied_dirs)
    implied_dirs: tuple = ()


def clean_name(name: str) -> str:
    """The entry's path relative to the root ('' for the root itself), or InvalidArgument."""
    if "\x00" in name:
        raise InvalidArgument(f"layer entry {name!r}: name contains a NUL byte")
    p = name.lstrip("/")
    p = posixpath.normpath(p) if p else "."
    if p == ".":
        return ""
    if p == ".." or p.startswith("../"):
        raise InvalidArgument(f"layer entry {name!r}: path climbs out of the root")
    return p


def apply_layer(stream: cz.ByteReader, root: str, lowers: Sequence[str] | None = ()) -> ApplyResult:
    """Unpack the layer read from ``stream`` into ``root``; return an ApplyResult (on a full disk
    ResourceExhausted naming the layer's directory: the caller removes its snapshot)."""
    with space.enospc("a layer's files", root):
        return _apply_layer(stream, root, lowers)


def _apply_layer(stream: cz.ByteReader, root: str, lowers: Sequence[str] | None = ()) -> ApplyResult:
    """Unpack the layer read from ``stream`` into ``root``; return an ApplyResult.

    ``stream`` is any object with ``read(n)`` (a download in progress is fine): it is read
    exactly once, to its end, and both the digest of the bytes read and the diffID of the
    uncompressed tar are computed on the way. Compression is detected by magic bytes.
    ``root`` is the directory receiving the layer (an overlay upper dir: empty, on the
    snapshot file system). ``lowers`` are the parent layers' dirs, top first; a directory
    the tar implies without an entry of its own takes its owner, mode and mtime from there,
    so the upper copy does not change the merged view's metadata.

    ``lowers=None``: the parent layers are not known yet (a parallel pull unpacks a layer
    before its parent is committed). Nothing here depends on them but the implied
    directories: they stay root 0755 and are listed in ``ApplyResult.implied_dirs``; call
    ``fix_implied_dirs(root, res.implied_dirs, lowers)`` once the lowers are known, before
    the layer is committed. (Hard link targets never need the lowers: they must be in this
    layer, and are looked up in ``root`` only.)
    """
    raw = cz.HashingReader(stream)
    kind = cz.detect(raw.peek(8))
    # a plain tar is its own diff: one hash serves for both digests
    tar_stream = raw if kind is None else cz.HashingReader(cz.decompressing_reader(raw, kind))
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    lower_fds = []
    try:
        for lower in lowers or ():
            lower_fds.append(os.open(lower, _DIR_PATH | os.O_CLOEXEC))
        applier = _Applier(rootfd)
        try:
            # a stream ("r|"): tarfile only calls read() on it
            with tarfile.open(fileobj=cast(IO[bytes], tar_stream), mode="r|", errorlevel=2) as tf:
                try:
                    for ti in tf:
                        applier.entry(tf, ti)
                finally:
                    applier._drop_parent()
            tar_stream.drain()
            if tar_stream is not raw:
                raw.drain()
        except (tarfile.TarError, EOFError) as e:
            raise InvalidArgument(f"layer: corrupt or truncated tar: {e}") from None
        except Exception as e:
            if _is_decompress_error(e):
                raise InvalidArgument(f"layer: corrupt {kind} stream: {e}") from None
            raise
        applier.finish()
        implied = tuple(applier.implied)
        if lowers:
            _fix_implied(rootfd, implied, lower_fds)
    finally:
        os.close(rootfd)
        for fd in lower_fds:
            os.close(fd)
    return ApplyResult(raw.digest(), tar_stream.digest(), raw.size, tar_stream.size, kind, implied)


def fix_implied_dirs(root: str, implied_dirs: Iterable[str], lowers: Sequence[str] | None) -> None:
    """Give each implied directory of a layer applied with ``lowers=None`` the owner, mode and
    mtime of the same directory in the nearest of ``lowers`` (top first) that has it, as
    apply_layer does when it knows the lowers. ``root`` must hold the whole applied layer:
    this is the last change to it before the commit (the mtimes set here stay)."""
    if not implied_dirs or not lowers:
        return
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    lower_fds = []
    try:
        for lower in lowers:
            lower_fds.append(os.open(lower, _DIR_PATH | os.O_CLOEXEC))
        _fix_implied(rootfd, implied_dirs, lower_fds)
    finally:
        os.close(rootfd)
        for fd in lower_fds:
            os.close(fd)


def _fix_implied(rootfd, implied_dirs, lower_fds):
    for rel in implied_dirs:
        st = _lower_dir_stat(lower_fds, rel)
        if st is None:
            continue  # not a directory below: root 0755, as made
        try:
            # the layer is complete and the path was checked when made; still, never through a symlink
            fd = lfs.openat2(rootfd, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # replaced by a later entry of the layer: that entry's metadata is the layer's
        try:
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after chown, which may clear setgid
            os.utime(fd, ns=(st.st_mtime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)


def _lower_dir_stat(lower_fds, rel):
    """stat of ``rel`` in the topmost lower that has it, if that is a directory; else None."""
    for lfd in lower_fds:
        try:
            fd = lfs.openat2(lfd, rel, os.O_PATH | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ENOENT:
                continue
            return None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return st if stat.S_ISDIR(st.st_mode) else None
    return None


def _is_decompress_error(e):
    import zlib
    if isinstance(e, zlib.error):
        return True
    import gzip
    if isinstance(e, gzip.BadGzipFile):
        return True
    if type(e).__module__.startswith("zstandard") or type(e).__name__ == "ZstdError":
        return True
    return False


class _Applier:
    """Layer mode: whiteouts have their overlay meaning, no path may go through a symlink.
    Copy mode (`_Extractor`): no whiteout meaning, symlinks are followed inside the root."""
    whiteouts = True
    devices = True
    resolve = lfs.RESOLVE_STRICT

    def __init__(self, rootfd, prefix: str = "", no_overwrite_dir_non_dir: bool = False,
                 digests: dict[str, str] | None = None):
        self.rootfd = rootfd
        self.digests = digests  # relpath -> sha256 hex of the regular files written (and still there)
        self.prefix = prefix  # copy mode: the destination directory below the root
        self.no_overwrite_dir_non_dir = no_overwrite_dir_non_dir
        self.dir_times: dict[str, int] = {}  # relpath -> mtime_ns of directories with an entry, set last
        self.implied: dict[str, None] = {}   # relpath -> None: directories made for entries below them only
        self._parent: tuple[str, int] | None = None   # (relpath, fd) of the last parent opened (strict mode)
        self.umask = umask()

    # --- path resolution -------------------------------------------------------------

    def _open_dir(self, rel, name, create):
        """fd (O_PATH) of directory ``rel`` below the root; implied dirs are made if ``create``."""
        if rel == "":
            return os.dup(self.rootfd)
        try:
            return lfs.openat2(self.rootfd, rel, _DIR_PATH, resolve=self.resolve)
        except OSError as e:
            if e.errno != errno.ENOENT or not create:
                raise self._resolve_error(e, name, rel) from None
        # every prefix is resolved from the root by the kernel (never from a directory fd we
        # walked to: in copy mode an absolute symlink must resolve against the root)
        comps = rel.split("/")
        fd = os.dup(self.rootfd)
        try:
            for i, comp in enumerate(comps):
                path = "/".join(comps[:i + 1])
                try:
                    nfd = lfs.openat2(self.rootfd, path, _DIR_PATH, resolve=self.resolve)
                except OSError as e:
                    # copy mode: the destination itself is never made, only what the archive adds below it
                    if e.errno != errno.ENOENT or (self.prefix and len(path) <= len(self.prefix)):
                        raise self._resolve_error(e, name, path) from None
                    try:
                        os.mkdir(comp, 0o755, dir_fd=fd)
                    except FileExistsError:  # a symlink to nowhere (copy mode)
                        raise InvalidArgument(f"entry {name!r}: path `{path}` is a dangling symlink") from None
                    self.implied[path] = None
                    nfd = lfs.openat2(self.rootfd, path, _DIR_PATH, resolve=self.resolve)
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _resolve_error(e, name, rel):
        if e.errno == errno.ELOOP:
            why = "goes through a symlink"
        elif e.errno == errno.EXDEV:
            why = "climbs out of the root"
        elif e.errno == errno.ENOTDIR:
            why = "a parent is not a directory"
        elif e.errno == errno.ENOENT:
            why = "does not exist"
        else:
            return OSError(e.errno, f"layer entry {name!r}: open `{rel}`: {os.strerror(e.errno)}")
        return InvalidArgument(f"layer entry {name!r}: path `{rel}` {why}")

    # --- entries -----------------------------------------------------------------------

    def entry(self, tf, ti):
        name = ti.name
        rel = clean_name(name)
        if rel == "":
            return  # the root itself: its metadata belongs to the snapshot, not the layer
        if self.prefix:
            rel = posixpath.join(self.prefix, rel)
        parent, base = posixpath.split(rel)
        if self.whiteouts and base.startswith(WHITEOUT_PREFIX):
            return self._whiteout(ti, parent, base)
        if not self.devices and (ti.ischr() or ti.isblk()):
            return  # copy mode: device nodes are not copied in
        if self.resolve != lfs.RESOLVE_STRICT:
            pfd = self._open_dir(parent, name, create=True)
            try:
                self._create(tf, ti, pfd, base, rel)
            finally:
                os.close(pfd)
            return
        # no symlink is followed and nothing but this tar changes the tree: the last parent's fd
        # serves the entries after it in the same directory (most of a tar). It cannot go stale: an
        # entry that replaces a directory is in that directory's parent, so the cache moved there
        if self._parent is None or self._parent[0] != parent:
            self._drop_parent()
            self._parent = (parent, self._open_dir(parent, name, create=True))
        self._create(tf, ti, self._parent[1], base, rel)

    def _drop_parent(self):
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _whiteout(self, ti, parent, base):
        name = ti.name
        if base == WHITEOUT_OPAQUE:
            pfd = self._open_dir(parent, name, create=True)
            try:
                os.setxattr(f"/proc/self/fd/{pfd}", OVERLAY_OPAQUE_XATTR, b"y")
            finally:
                os.close(pfd)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing for overlay
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise InvalidArgument(f"layer entry {name!r}: whiteout of {target!r} is not allowed")
        pfd = self._open_dir(parent, name, create=True)
        try:
            if _lstat(target, pfd) is not None:
                # the same layer made it; a whiteout only hides lower layers (image-spec)
                return
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            os.chown(target, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)

    def _create(self, tf, ti, pfd, base, rel):
        name = ti.name
        if ti.islnk() and posixpath.normpath(ti.linkname.lstrip("/") or ".") == rel:
            return  # a hard link to itself: nothing to do
        # an entry of its own: no longer implied (a directory keeps its entry's metadata; anything
        # else replaces it)
        self.implied.pop(rel, None)
        self.dir_times.pop(rel, None)
        if self.digests is not None:
            self.digests.pop(rel, None)
        if ti.isreg() and self._new_file(tf, ti, pfd, base, rel):
            return
        existing = _lstat(base, pfd)
        if existing is not None and self.no_overwrite_dir_non_dir:
            if stat.S_ISDIR(existing.st_mode) and not ti.isdir():
                raise InvalidArgument(f"cannot overwrite directory \"/{rel}\" with non-directory")
            if not stat.S_ISDIR(existing.st_mode) and ti.isdir():
                raise InvalidArgument(f"cannot overwrite non-directory \"/{rel}\" with directory")
        if existing is not None and not (ti.isdir() and stat.S_ISDIR(existing.st_mode)):
            if stat.S_ISDIR(existing.st_mode):
                import shutil
                shutil.rmtree(base, dir_fd=pfd)   # never the cached parent: that is this entry's own
                if self.digests:
                    self.digests.clear()   # some of them went with it (rare: none is trusted any more)
            else:
                os.unlink(base, dir_fd=pfd)
            existing = None

        mode = ti.mode & 0o7777
        if ti.isdir():
            if existing is None:
                os.mkdir(base, 0o700, dir_fd=pfd)
            self._meta(ti, pfd, base, mode)
            self.dir_times[rel] = _ns(ti.mtime)
            return
        if ti.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=pfd)
            try:
                self._write(tf, ti, fd, rel)
                os.fchown(fd, ti.uid, ti.gid)
                os.fchmod(fd, mode)  # after chown, which clears setuid/setgid
            finally:
                os.close(fd)
            self._xattrs(ti, pfd, base)
            os.utime(base, ns=(_ns(ti.mtime),) * 2, dir_fd=pfd, follow_symlinks=False)
            return
        if ti.issym():
            os.symlink(ti.linkname, base, dir_fd=pfd)
            os.chown(base, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
            self._xattrs(ti, pfd, base)
            os.utime(base, ns=(_ns(ti.mtime),) * 2, dir_fd=pfd, follow_symlinks=False)
            return
        if ti.islnk():
            return self._hardlink(ti, pfd, base)
        if ti.ischr() or ti.isblk():
            kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(ti.devmajor, ti.devminor), dir_fd=pfd)
        elif ti.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
        else:
            raise InvalidArgument(f"layer entry {name!r}: unsupported tar entry type {ti.type!r}")
        self._meta(ti, pfd, base, mode)
        os.utime(base, ns=(_ns(ti.mtime),) * 2, dir_fd=pfd, follow_symlinks=False)

    def _new_file(self, tf, ti, pfd, base, rel):
        """A regular file where there is nothing yet (False, having done nothing, when there is
        something): made with its mode when open() gives exactly that (no setuid/setgid/sticky bit,
        which chown would clear, and nothing the umask takes), its times set through the fd."""
        mode = ti.mode & 0o7777
        at_create = mode & (0o7000 | self.umask) == 0
        try:
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode if at_create else 0o600, dir_fd=pfd)
        except FileExistsError:
            return False
        try:
            self._write(tf, ti, fd, rel)
            os.fchown(fd, ti.uid, ti.gid)
            if not at_create:
                os.fchmod(fd, mode)  # after chown, which clears setuid/setgid
            self._xattrs(ti, pfd, base)
            os.utime(fd, ns=(_ns(ti.mtime),) * 2)
        finally:
            os.close(fd)
        return True

    def _write(self, tf, ti, fd, rel):
        src = tf.extractfile(ti)
        h = hashlib.sha256() if self.digests is not None else None
        while chunk := src.read(_CHUNK):
            if h is not None:
                h.update(chunk)
            mv = memoryview(chunk)
            while mv:
                mv = mv[os.write(fd, mv):]
        if h is not None:
            self.digests[rel] = h.hexdigest()

    def _hardlink(self, ti, pfd, base):
        name = ti.name
        try:
            target = clean_name(ti.linkname) if ti.linkname else ""
            if target and self.prefix:
                target = posixpath.join(self.prefix, target)
        except InvalidArgument:
            raise InvalidArgument(f"layer entry {name!r}: hard link target {ti.linkname!r} "
                                  f"climbs out of the root") from None
        if target == "":
            raise InvalidArgument(f"layer entry {name!r}: hard link to the root is not allowed")
        tparent, tbase = posixpath.split(target)
        try:
            tfd = self._open_dir(tparent, name, create=False)
        except InvalidArgument as e:
            raise InvalidArgument(f"layer entry {name!r}: hard link target {ti.linkname!r}: "
                                  f"{str(e).split(': ', 1)[-1]}") from None
        try:
            st = _lstat(tbase, tfd)
            if st is None:
                raise InvalidArgument(
                    f"layer entry {name!r}: hard link target {ti.linkname!r} is not in this layer")
            if stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(
                    f"layer entry {name!r}: hard link target {ti.linkname!r} is a directory")
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _meta(self, ti, pfd, base, mode):
        os.chown(base, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(base, mode, dir_fd=pfd)  # not a symlink: we just made it
        self._xattrs(ti, pfd, base)

    @staticmethod
    def _xattrs(ti, pfd, base):
        for key, value in _pax_xattrs(ti):
            if key.startswith(_OVERLAY_XATTR_PREFIX):
                continue
            try:
                os.setxattr(f"/proc/self/fd/{pfd}/{base}", key, value, follow_symlinks=False)
            except OSError as e:
                # like docker: a file system without this xattr namespace is not fatal
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise OSError(e.errno, f"layer entry {ti.name!r}: setxattr {key}: "
                                           f"{os.strerror(e.errno)}") from None

    def finish(self):
        self._drop_parent()
        for rel, ns in self.dir_times.items():
            try:
                fd = lfs.openat2(self.rootfd, rel, os.O_RDONLY | os.O_DIRECTORY, resolve=self.resolve)
            except OSError:
                continue  # replaced later in the layer
            try:
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)


def _pax_xattrs(ti):
    import base64
    for k, v in ti.pax_headers.items():
        if k.startswith("SCHILY.xattr."):
            yield k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape")
        elif k.startswith("LIBARCHIVE.xattr."):
            from urllib.parse import unquote
            try:
                yield unquote(k[len("LIBARCHIVE.xattr."):]), base64.b64decode(v + "==")
            except ValueError:
                raise InvalidArgument(f"layer entry {ti.name!r}: bad xattr header {k!r}") from None


def open_beneath(dirfd: int, rel: str, flags: int) -> int:
    """``rel`` below directory fd ``dirfd`` with every component a real directory of it (no symlink,
    no mount crossed, nothing above it): an fd (close-on-exec), or OSError."""
    return lfs.openat2(dirfd, rel, flags, resolve=lfs.RESOLVE_STRICT)


def umask() -> int:
    """This process's umask, read without setting it (os.umask would change it for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777  # unknown: every file gets its chmod


def _lstat(name, dirfd):
    try:
        return os.lstat(name, dir_fd=dirfd)
    except FileNotFoundError:
        return None


def _ns(mtime):
    return int(round(float(mtime) * 1_000_000_000))


class _Extractor(_Applier):
    whiteouts = False
    devices = False
    resolve = lfs.RESOLVE_IN_ROOT | lfs.RESOLVE_NO_MAGICLINKS


class _StrictExtractor(_Extractor):
    resolve = lfs.RESOLVE_STRICT


def extract_archive(stream: cz.ByteReader, root: str, dest: str = "", *,
                    no_overwrite_dir_non_dir: bool = False, follow_symlinks: bool = True,
                    digests: dict[str, str] | None = None) -> None:
    """`docker cp` into a container: untar ``stream`` into directory ``dest`` of ``root``.

    The layer applier's race-free path in copy mode: every path (the destination, each entry's
    parent, a hard link's target) is resolved by the kernel inside ``root`` at the moment it is
    opened (openat2 RESOLVE_IN_ROOT), so symlinks of the container are followed as the container
    sees them and a symlink swapped in by a running container (CVE-2018-15664) cannot lead
    outside; names have no whiteout meaning (a file named `.wh.x` is a file), device nodes are
    skipped, trusted.overlay.* xattrs dropped. A plain or compressed tar.

    ``follow_symlinks=False`` (a container's archive unpacked on the host, `cp C:path .`): no path
    may go through a symlink at all, as in layer mode, but names still have no whiteout meaning.

    ``digests``: filled with the sha256 (hex) of each regular file the archive leaves, by its path
    relative to ``root`` (a build context's, so that its COPYs need not read the files again).
    """
    kind_of = _Extractor if follow_symlinks else _StrictExtractor
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        prefix = clean_name(dest) if dest.strip("/") else ""
        if prefix:
            try:
                fd = lfs.openat2(rootfd, prefix, os.O_PATH, resolve=kind_of.resolve)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR):
                    raise NotFound(f"Could not find the file /{prefix} in container") from None
                raise _Applier._resolve_error(e, dest, prefix) from None
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    raise InvalidArgument("extraction point is not a directory")
            finally:
                os.close(fd)
        raw = cz.HashingReader(stream)
        kind = cz.detect(raw.peek(8))
        tar_stream = raw if kind is None else cz.decompressing_reader(raw, kind)
        ex = kind_of(rootfd, prefix, no_overwrite_dir_non_dir, digests)
        try:
            with tarfile.open(fileobj=cast(IO[bytes], tar_stream), mode="r|", errorlevel=2) as tf:
                for ti in tf:
                    try:
                        ex.entry(tf, ti)
                    except (FileNotFoundError, NotADirectoryError) as e:
                        # a running container moved or removed a directory on the way: its problem,
                        # a 404, never ours (a 500) and never a path outside the root
                        raise NotFound(f"copy {ti.name!r} into /{prefix}: {(e.strerror or str(e)).lower()}: the "
                                       "destination changed during the copy") from None
        except (tarfile.TarError, EOFError) as e:
            raise InvalidArgument(f"bad archive: {e}") from None
        except Exception as e:
            if _is_decompress_error(e):
                raise InvalidArgument(f"bad archive: corrupt {kind} stream: {e}") from None
            raise
        finally:
            ex._drop_parent()
        ex.finish()
    finally:
        os.close(rootfd)
