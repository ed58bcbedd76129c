"""The image metadata index: tags -> images, images -> manifests, shared by several processes.

One JSON document, ``<root>/images/metadata.json``, replaced atomically (temp file, fsync,
rename, fsync of the directory), read and changed only under ``flock(<root>/images/lock)``::

    {"version": 1,
     "images": {"<config digest = image ID>": {
         "manifest": "<manifest digest>", "media_type": "<manifest media type>",
         "index": "<index digest>" | null,           # when pulled through an index / manifest list
         "repo_digests": ["docker.io/library/busybox@sha256:..."],
         "sources": ["127.0.0.1:5000/x"],            # repositories it came from or went to (mounts)
         "chain": "<top ChainID>" | null,            # its root file system's snapshot
         "layer_sizes": [uncompressed bytes per layer, bottom first],
         "added": <unix time>, "last_tag_time": <unix time> | null}},
     "tags": {"docker.io/library/busybox:latest": "<image ID>"}}

An image with no tag is "dangling" (Docker's <none>:<none>) until pruned. A second lock,
``<root>/images/gc.lock``, separates writers that add content not referenced yet (pull,
load, import, container roots: shared) from garbage collection (exclusive).
"""

import contextlib
import fcntl
import json
import os

from ketch import space

VERSION = 1


def _empty():
    return {"version": VERSION, "images": {}, "tags": {}}


class Metadata:
    def __init__(self, root):
        self.dir = os.path.join(root, "images")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(self.dir, "metadata.json")
        self._lock = os.path.join(self.dir, "lock")
        self._gc_lock = os.path.join(self.dir, "gc.lock")

    def load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return _empty()
        doc.setdefault("images", {})
        doc.setdefault("tags", {})
        return doc

    def _store(self, doc):
        space.write_atomic(self.path, json.dumps(doc, sort_keys=True, indent=1).encode(), "image metadata")
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def read(self):
        """The document under a shared lock (do not change it)."""
        with _flock(self._lock, fcntl.LOCK_SH):
            yield self.load()

    @contextlib.contextmanager
    def write(self):
        """The document under an exclusive lock; stored atomically when the block ends without error."""
        with _flock(self._lock, fcntl.LOCK_EX):
            doc = self.load()
            yield doc
            self._store(doc)

    def snapshot(self):
        with self.read() as doc:
            return doc

    @contextlib.contextmanager
    def content_guard(self):
        """Held (shared) while adding content that no tag references yet; GC takes it exclusive."""
        with _flock(self._gc_lock, fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def gc_guard(self):
        with _flock(self._gc_lock, fcntl.LOCK_EX):
            yield

    def stray_temp_files(self):
        """Temp files of metadata writers that died (reported by system check)."""
        out = []
        for name in os.listdir(self.dir):
            if name.startswith("metadata.json.tmp-"):
                pid = name.split("-")[1]
                if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
                    out.append(os.path.join(self.dir, name))
        return out


@contextlib.contextmanager
def _flock(path, how):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)
