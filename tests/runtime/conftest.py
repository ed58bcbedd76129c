import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

from tests import helpers


class RT:
    """One test's runtime world: its own --root, bundles, and a cgroup parent it removes."""

    def __init__(self, rootfs_src):
        self.tmp = tempfile.mkdtemp(prefix="ketch-rt-")
        os.chmod(self.tmp, 0o755)      # user-namespaced roots must be able to reach their bundle
        self.root = os.path.join(self.tmp, "state")
        self.rootfs_src = rootfs_src
        self.cg_parent = f"ketch-test-{uuid.uuid4().hex[:8]}"
        self.ids = []

    def bundle(self, args, mutate=None, name=None):
        cid = name or helpers.unique()
        cfg = helpers.base_config(args)
        cfg["linux"]["cgroupsPath"] = f"/{self.cg_parent}/{cid}"
        if mutate:
            mutate(cfg)
        b = helpers.Bundle(os.path.join(self.tmp, cid), self.rootfs_src, cfg)
        b.id = cid
        self.ids.append(cid)
        return b

    def rt(self, *args, **kw):
        return helpers.runtime(self.root, *args, **kw)

    def run(self, args, mutate=None, **kw):
        b = self.bundle(args, mutate)
        return self.rt("run", "--bundle", b.path, b.id, **kw)

    def runc(self, *args, runtime="runc", timeout=60, **kw):
        """Run runc (or crun) on this test's own --root, output through files as for ketch-runtime."""
        if not shutil.which(runtime):
            pytest.skip(f"{runtime} is not installed (make test installs it)")
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            r = subprocess.run([runtime, "--root", os.path.join(self.tmp, runtime + "-state")] + list(args),
                               stdout=out, stderr=err, text=True, timeout=timeout, **kw)
            out.seek(0)
            err.seek(0)
            r.stdout, r.stderr = out.read(), err.read()
        return r

    def both(self, args, mutate=None, prepare=None, runtimes=("ketch", "runc")):
        """Run one config under ketch-runtime and under runc, each on a bundle of its own (so one's
        writes into the root cannot fool the other); {"ketch": result, "runc": result}.
        prepare(bundle) runs on each bundle before its run."""
        out = {}
        for name in runtimes:
            b = self.bundle(args, mutate)
            if prepare:
                prepare(b)
            if name == "ketch":
                out[name] = self.rt("run", "--bundle", b.path, b.id)
            else:
                out[name] = self.runc("run", "--bundle", b.path, b.id, runtime=name)
                self.runc("delete", "--force", b.id, runtime=name)
        return out

    def cgroup_file(self, controller, cid, name):
        return open(f"/sys/fs/cgroup/{controller}/{self.cg_parent}/{cid}/{name}").read().strip()

    def state(self, cid):
        r = self.rt("state", cid)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def cleanup(self):
        for cid in self.ids:
            self.rt("delete", "--force", cid)
        helpers.remove_cgroup_tree(self.cg_parent)
        subprocess.run(["umount", "-R", self.tmp], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def map_user_namespace(c):
    """A user namespace mapping container root to host uid/gid 100000 (65536 ids); the mounts a
    user-namespaced root cannot make (sysfs, cgroup, mqueue) dropped. The root must be chowned."""
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["mounts"] = [x for x in c["mounts"] if x["type"] not in ("sysfs", "cgroup", "mqueue")]


class ConsoleSocket:
    """A console socket that accepts one connection and keeps what it sends: the pty's name and master."""

    def __init__(self, path):
        import socket
        import threading
        self.path = path
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.name = self.fd = None
        self._t = threading.Thread(target=self._accept)
        self._t.start()

    def _accept(self):
        import socket
        conn, _ = self.srv.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        self.name, self.fd = msg, fds[0]
        conn.close()

    def wait(self, timeout=10):
        self._t.join(timeout)
        self.srv.close()
        return self.fd


@pytest.fixture
def rt(busybox_rootfs):
    w = RT(busybox_rootfs)
    yield w
    w.cleanup()
