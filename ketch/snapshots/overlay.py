"""The overlay snapshotter (containerd core/snapshots, overlay driver).

Importing a layer and running a container, in a few lines::

    sn = OverlaySnapshotter("/var/lib/ketch/snapshots")
    # layer n, its parent is the chain of layers 0..n-1 (already committed under its ChainID)
    key = "extract-<random> " + chain_n
    sn.prepare(key, parent=chain_n_1)            # an empty upper dir on top of the chain
    apply_layer(blob_stream, sn.upper_dir(key), lowers=sn.lower_dirs(key))
    sn.commit(chain_n, key)                      # now read-only, named by its ChainID
    # (ketch.snapshots.unpack.unpack_layer does exactly this, once per ChainID)

    sn.prepare("container-abc", parent=chain_top) # container root: its own upper + work
    sn.mount("container-abc", rootfs_dir)         # overlay lowerdir=top..0, upperdir, workdir
    ...                                          # writes land in container-abc's upper only
    sn.unmount(rootfs_dir); sn.remove("container-abc")

Committed snapshots are immutable and shared: two images with the same bottom layers
have the same ChainIDs and so the same directories. A snapshot with children cannot be
removed. On disk::

    <root>/metadata.json     {"next_id": N, "snapshots": {key: {id, kind, parent, created, labels}}}
    <root>/lock              flock'ed around every metadata read-modify-write
    <root>/snapshots/<id>/fs     the layer (committed) or upper dir (active)
    <root>/snapshots/<id>/work   overlay work dir (active snapshots)

Ids are short decimal numbers, so a mount over many layers names each lower dir in a few
bytes ("12/fs") when relative to <root>/snapshots (see ketch.snapshots.mount).

Crash safety: a snapshot becomes committed only by the metadata write in ``commit``,
after syncfs has flushed its files; the metadata file is replaced atomically. A kill
during an unpack leaves an active snapshot labelled with its (now dead) owner process,
or a directory no metadata names: ``check`` reports both, ``cleanup`` removes both.
"""

import builtins
import contextlib
import fcntl
import json
import os
import shutil
import stat
import time

from ketch import space
from ketch.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ketch.linux import fs as lfs
from ketch.snapshots import mount as mnt
from ketch.snapshots.mount import Mount

ACTIVE = "active"
VIEW = "view"
COMMITTED = "committed"

# label on a transient (unpack) snapshot: "<pid>:<process start time>" of its owner
OWNER_LABEL = "ketch.owner"


def owner_label() -> str:
    """The OWNER_LABEL value naming this process (pid reuse is caught by its start time)."""
    return f"{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()[19].decode()


def _owner_alive(value):
    pid, _, start = value.partition(":")
    try:
        return _start_time(int(pid)) == start
    except ValueError:
        return False


class OverlaySnapshotter:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._snapshots = os.path.join(self.root, "snapshots")
        os.makedirs(self._snapshots, mode=0o700, exist_ok=True)
        self._meta_path = os.path.join(self.root, "metadata.json")
        self._lock_path = os.path.join(self.root, "lock")

    # --- metadata --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, write=False):
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            meta = self._load()
            yield meta
            if write:
                self._store(meta)
        finally:
            os.close(fd)

    def _load(self):
        try:
            with open(self._meta_path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {"next_id": 1, "snapshots": {}}

    def _store(self, meta):
        space.write_atomic(self._meta_path, json.dumps(meta, sort_keys=True).encode(), "snapshot metadata")
        lfs.fsync_dir(self.root)

    @staticmethod
    def _get(meta, key):
        try:
            return meta["snapshots"][key]
        except KeyError:
            raise NotFound(f"snapshot {key}: not found") from None

    def _dir(self, sid):
        return os.path.join(self._snapshots, str(sid))

    def _fs(self, sid):
        return os.path.join(self._snapshots, str(sid), "fs")

    def _chain(self, meta, key):
        """Ids of ``key``'s committed ancestors, nearest first."""
        out = []
        parent = meta["snapshots"][key]["parent"]
        while parent is not None:
            rec = meta["snapshots"][parent]
            out.append(rec["id"])
            parent = rec["parent"]
        return out

    # --- the interface -----------------------------------------------------------------

    def prepare(self, key: str, parent: str | None = None, labels: dict | None = None) -> builtins.list[Mount]:
        """Create an active (writable) snapshot ``key`` on top of committed ``parent``; mounts."""
        return self._create(ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str | None = None, labels: dict | None = None) -> builtins.list[Mount]:
        """Create a read-only snapshot ``key`` of committed ``parent``; its mounts."""
        return self._create(VIEW, key, parent, labels)

    def _create(self, kind, key, parent, labels):
        if not isinstance(key, str) or not key or "\x00" in key:
            raise InvalidArgument(f"snapshot key {key!r}: must be a non-empty string")
        with self._locked(write=True) as meta:
            if key in meta["snapshots"]:
                raise AlreadyExists(f"snapshot {key}: already exists")
            if parent is not None:
                prec = self._get(meta, parent)
                if prec["kind"] != COMMITTED:
                    raise InvalidArgument(f"snapshot {key}: parent {parent} is not committed")
            sid = meta["next_id"]
            meta["next_id"] = sid + 1
            d = self._dir(sid)
            if os.path.lexists(d):
                shutil.rmtree(d)  # an orphan from a crash reusing the id
            os.mkdir(d, 0o700)
            os.mkdir(os.path.join(d, "fs"), 0o755)
            if kind == ACTIVE:
                os.mkdir(os.path.join(d, "work"), 0o700)
            meta["snapshots"][key] = {"id": sid, "kind": kind, "parent": parent,
                                      "created": time.time(), "labels": dict(labels or {})}
            return self._mounts(meta, key)

    def commit(self, name: str, key: str, labels: dict | None = None, parent: str | None = None) -> None:
        """Make active snapshot ``key`` the committed snapshot ``name`` (key disappears).

        AlreadyExists if ``name`` exists (another unpack of the same layer won the race).

        ``parent``: ``key`` was prepared without a parent (a layer applied before the layers
        below it were committed: a parallel unpack) and is committed on top of the committed
        snapshot ``parent``. Refused (FailedPrecondition) if ``key`` already has a parent, or
        ``parent`` is not committed. Nothing mounts ``key`` meanwhile: its directory does not
        depend on the lowers (the caller fixes implied directories first, see
        ketch.archive.fix_implied_dirs).
        """
        with self._locked() as meta:
            rec = self._get(meta, key)
            if rec["kind"] != ACTIVE:
                raise FailedPrecondition(f"commit {key}: snapshot is {rec['kind']}, not active")
            self._check_rebase(meta, key, rec, parent)
        # flush the layer's files before the metadata says it is complete
        fd = os.open(self._fs(rec["id"]), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            lfs.syncfs(fd)
        finally:
            os.close(fd)
        with self._locked(write=True) as meta:
            rec = self._get(meta, key)
            if rec["kind"] != ACTIVE:
                raise FailedPrecondition(f"commit {key}: snapshot is {rec['kind']}, not active")
            self._check_rebase(meta, key, rec, parent)
            if name in meta["snapshots"]:
                raise AlreadyExists(f"commit {key}: snapshot {name} already exists")
            del meta["snapshots"][key]
            new_labels = dict(rec["labels"])
            new_labels.pop(OWNER_LABEL, None)
            new_labels.update(labels or {})
            meta["snapshots"][name] = {"id": rec["id"], "kind": COMMITTED,
                                       "parent": rec["parent"] if parent is None else parent,
                                       "created": time.time(), "labels": new_labels}
        shutil.rmtree(os.path.join(self._dir(rec["id"]), "work"), ignore_errors=True)

    def _check_rebase(self, meta, key, rec, parent):
        if parent is None:
            return
        if rec["parent"] is not None:
            raise FailedPrecondition(f"commit {key} on {parent}: snapshot already has parent {rec['parent']}")
        prec = meta["snapshots"].get(parent)
        if prec is None or prec["kind"] != COMMITTED:
            raise FailedPrecondition(f"commit {key} on {parent}: parent is missing or not committed")

    def mounts(self, key: str) -> builtins.list[Mount]:
        """The mounts that give ``key``'s root (active or view)."""
        with self._locked() as meta:
            self._get(meta, key)
            return self._mounts(meta, key)

    def _mounts(self, meta, key):
        rec = meta["snapshots"][key]
        if rec["kind"] == COMMITTED:
            raise FailedPrecondition(f"mounts of {key}: snapshot is committed; use view")
        chain = [self._fs(i) for i in self._chain(meta, key)]
        if rec["kind"] == ACTIVE:
            if not chain:
                return [Mount("bind", self._fs(rec["id"]), ("rbind", "rw"))]
            return [Mount("overlay", "overlay", (
                "lowerdir=" + ":".join(chain),
                "upperdir=" + self._fs(rec["id"]),
                "workdir=" + os.path.join(self._dir(rec["id"]), "work"),
            ))]
        if not chain:
            return [Mount("bind", self._fs(rec["id"]), ("rbind", "ro"))]
        if len(chain) == 1:
            return [Mount("bind", chain[0], ("rbind", "ro"))]
        return [Mount("overlay", "overlay", ("lowerdir=" + ":".join(chain),))]

    def upper_dir(self, key: str) -> str:
        """The directory an active snapshot's writes go to (where a layer is applied)."""
        with self._locked() as meta:
            rec = self._get(meta, key)
            if rec["kind"] != ACTIVE:
                raise FailedPrecondition(f"upper dir of {key}: snapshot is {rec['kind']}")
            return self._fs(rec["id"])

    def lower_dirs(self, key: str) -> builtins.list[str]:
        """The committed layer dirs under ``key``, top first."""
        with self._locked() as meta:
            self._get(meta, key)
            return [self._fs(i) for i in self._chain(meta, key)]

    def layer_dirs(self, name: str) -> builtins.list[str]:
        """Committed ``name``'s own dir and its ancestors', top first: the lower dirs of a
        snapshot prepared (or committed) on top of ``name``."""
        with self._locked() as meta:
            rec = self._get(meta, name)
            if rec["kind"] != COMMITTED:
                raise FailedPrecondition(f"layer dirs of {name}: snapshot is {rec['kind']}, not committed")
            return [self._fs(rec["id"])] + [self._fs(i) for i in self._chain(meta, name)]

    def stat(self, key: str) -> dict:
        """{'name', 'kind', 'parent', 'created', 'labels'}."""
        with self._locked() as meta:
            return self._info(key, self._get(meta, key))

    @staticmethod
    def _info(key, rec):
        return {"name": key, "kind": rec["kind"], "parent": rec["parent"],
                "created": rec["created"], "labels": dict(rec["labels"])}

    def list(self) -> builtins.list[dict]:
        with self._locked() as meta:
            return [self._info(k, r) for k, r in sorted(meta["snapshots"].items())]

    def remove(self, key: str) -> None:
        """Remove ``key``; FailedPrecondition if other snapshots are built on it.

        The caller unmounts first (an active snapshot still mounted would keep its upper busy).
        """
        with self._locked(write=True) as meta:
            rec = self._get(meta, key)
            children = [k for k, r in meta["snapshots"].items() if r["parent"] == key]
            if children:
                raise FailedPrecondition(
                    f"remove {key}: snapshot has {len(children)} children, e.g. {children[0]}")
            del meta["snapshots"][key]
        # metadata first: a crash here leaves an orphan dir that cleanup() removes
        shutil.rmtree(self._dir(rec["id"]), ignore_errors=True)

    def usage(self, key: str) -> dict:
        """{'size': bytes on disk, 'bytes': the files' sizes, 'inodes': count} of ``key``'s own dir
        (hard links once)."""
        with self._locked() as meta:
            rec = self._get(meta, key)
        return _du(self._fs(rec["id"]))

    def mount(self, key: str, target: str) -> None:
        """Mount ``key``'s root on ``target`` (handles lower dir lists beyond a page)."""
        mnt.mount_all(self.mounts(key), target)

    @staticmethod
    def unmount(target: str, detach: bool = False) -> None:
        mnt.unmount(target, detach)

    # --- consistency -----------------------------------------------------------------

    def check(self) -> builtins.list[dict]:
        """[{'key', 'path', 'problem'}] for incomplete or damaged state; changes nothing."""
        problems = []
        with self._locked() as meta:
            known = set()
            for key, rec in meta["snapshots"].items():
                sid = rec["id"]
                known.add(str(sid))
                if not os.path.isdir(self._fs(sid)):
                    problems.append({"key": key, "path": self._dir(sid), "problem": "directory missing"})
                if rec["kind"] == ACTIVE and not os.path.isdir(os.path.join(self._dir(sid), "work")):
                    problems.append({"key": key, "path": self._dir(sid), "problem": "work dir missing"})
                if rec["parent"] is not None:
                    p = meta["snapshots"].get(rec["parent"])
                    if p is None or p["kind"] != COMMITTED:
                        problems.append({"key": key, "path": self._dir(sid),
                                         "problem": f"parent {rec['parent']} missing or not committed"})
                owner = rec["labels"].get(OWNER_LABEL)
                if rec["kind"] == ACTIVE and owner and not _owner_alive(owner):
                    problems.append({"key": key, "path": self._dir(sid),
                                     "problem": "incomplete: its unpacking process is gone"})
            for name in sorted(os.listdir(self._snapshots)):
                if name not in known:
                    problems.append({"key": None, "path": self._dir(name),
                                     "problem": "orphan directory (no snapshot names it)"})
        return problems

    def cleanup(self) -> builtins.list[str]:
        """Remove half-done unpacks of dead processes and orphan dirs; returns their paths."""
        removed = []
        with self._locked(write=True) as meta:
            dead = [k for k, r in meta["snapshots"].items()
                    if r["kind"] == ACTIVE and r["labels"].get(OWNER_LABEL)
                    and not _owner_alive(r["labels"][OWNER_LABEL])]
            for k in dead:
                del meta["snapshots"][k]
            known = {str(r["id"]) for r in meta["snapshots"].values()}
            for name in os.listdir(self._snapshots):
                if name not in known:
                    d = self._dir(name)
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d)
        return sorted(removed)


def _du(path):
    """Disk use (`size`: allocated blocks, as du) and content bytes (`bytes`: the files' own sizes,
    as Docker's SizeRw counts them), hard links once."""
    size = inodes = nbytes = 0
    seen = set()
    for _dirpath, _dirnames, filenames, dfd in os.fwalk(path, follow_symlinks=False):
        st = os.fstat(dfd)
        size += st.st_blocks * 512
        inodes += 1
        for name in filenames:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            size += st.st_blocks * 512
            if not stat.S_ISDIR(st.st_mode):
                nbytes += st.st_size
            inodes += 1
    return {"size": size, "inodes": inodes, "bytes": nbytes}
