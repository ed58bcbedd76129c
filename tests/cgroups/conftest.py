"""Fixtures for the cgroup driver tests.

Real v1 tests work in /ketch-test-<random>/... of every mounted hierarchy and remove it,
and every process they start, even when a test fails. v2 tests run against a crafted
tree of plain files under tmp_path (this host is hybrid: its cgroup2 has no controllers).
"""

import os
import subprocess
import uuid

import pytest

from ketch.runtime import cgroups
from ketch.runtime.cgroups import common

PY = "/usr/bin/python3"


class Procs:
    """Children that wait for one byte on stdin before running their code, so a test
    can put them in a cgroup first; every one is killed and reaped at the end."""

    def __init__(self):
        self.started = []

    def spawn(self, code):
        p = subprocess.Popen([PY, "-I", "-S", "-c", "import sys; sys.stdin.buffer.read(1)\n" + code],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.started.append(p)
        return p

    @staticmethod
    def go(p):
        p.stdin.write(b"x")
        p.stdin.flush()

    def cleanup(self):
        for p in self.started:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdin, p.stdout, p.stderr):
                try:
                    f.close()
                except Exception:
                    pass


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.cleanup()


class V1World:
    def __init__(self, procs):
        self.top = "/ketch-test-%s" % uuid.uuid4().hex[:10]
        self.procs = procs
        self.managers = []

    def manager(self, name="c", **kw):
        m = cgroups.new_manager("%s/%s" % (self.top, name), name, **kw)
        self.managers.append(m)
        return m

    def cleanup(self):
        for m in self.managers:
            try:
                if m.frozen():
                    m.thaw()
            except Exception:
                pass
        self.procs.cleanup()
        for m in self.managers:
            try:
                m.destroy()
            except Exception:
                pass
        # the test's top directory in every hierarchy, whatever a test made below it
        for mnt in cgroups.cgroup_mounts():
            if mnt["mountpoint"].startswith(cgroups.DEFAULT_ROOT + "/"):
                d = mnt["mountpoint"] + self.top
                if os.path.isdir(d):
                    common.rmdir_tree(d)


@pytest.fixture
def v1(procs):
    if cgroups.detect() != "v1":
        pytest.skip("host is not on cgroup v1")
    w = V1World(procs)
    yield w
    w.cleanup()


OFFERED = "cpuset cpu io memory hugetlb pids rdma misc"
LEAF_FILES = [
    "cgroup.procs", "cgroup.freeze", "cgroup.events", "cgroup.subtree_control",
    "memory.max", "memory.swap.max", "memory.low", "memory.high", "memory.current", "memory.stat",
    "memory.events", "memory.swap.current", "memory.peak",
    "cpu.weight", "cpu.max", "cpu.max.burst", "cpu.idle", "cpu.stat",
    "cpuset.cpus", "cpuset.mems", "pids.max", "pids.current",
    "io.weight", "io.max", "io.stat", "hugetlb.2MB.max", "hugetlb.2MB.rsvd.max", "hugetlb.2MB.current",
    "hugetlb.1GB.max",
]


class V2Tree:
    """A crafted cgroup2 tree: root offers OFFERED, and so does each level below."""

    def __init__(self, base):
        self.root = str(base / "cgroup")
        os.mkdir(self.root)
        self.level(self.root, OFFERED)

    @staticmethod
    def level(d, offered):
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "cgroup.controllers"), "w") as f:
            f.write(offered + "\n")
        open(os.path.join(d, "cgroup.subtree_control"), "w").close()

    def manager(self, path="/a/b/c", cid="c", **kw):
        m = cgroups.new_manager(path, cid, root=self.root, version="v2", **kw)
        # what the kernel would show in each ancestor once its parent enabled everything
        rel = os.path.relpath(m.dir, self.root).split("/")
        for i in range(1, len(rel)):
            self.level(os.path.join(self.root, *rel[:i]), OFFERED)
        return m

    def leaf(self, m, controllers=OFFERED, files=LEAF_FILES, content=None):
        """The control files the kernel would show in the leaf, empty unless given."""
        with open(os.path.join(m.dir, "cgroup.controllers"), "w") as f:
            f.write(controllers + "\n")
        for name in files:
            open(os.path.join(m.dir, name), "w").close()
        for name, text in (content or {}).items():
            self.put(m, name, text)

    @staticmethod
    def put(m, name, text):
        with open(os.path.join(m.dir, name), "w") as f:
            f.write(text)

    @staticmethod
    def get(m, name):
        with open(os.path.join(m.dir, name)) as f:
            return f.read()


@pytest.fixture
def v2tree(tmp_path):
    return V2Tree(tmp_path)
