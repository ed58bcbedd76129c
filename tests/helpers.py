"""Shared test helpers: a busybox root filesystem from Debian's busybox-static, OCI bundles, runners."""

import copy
import json
import os
import shutil
import subprocess
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launcher_of_this_checkout(path):
    """True if `path` is a launcher that scripts/install-launchers.sh made from this checkout."""
    try:
        with open(path) as f:
            head = f.read(4096)
    except OSError:
        return False
    return f'sys.path[:0] = ["{REPO}",' in head


def _runtime():
    """This checkout's own ketch-runtime, never whatever is first on PATH (another checkout's, or a
    pip-installed one). `make test` names the launcher it just installed (KETCH_TEST_RUNTIME). Else
    the default launcher if this checkout made it, else the repository's bin/ketch-runtime."""
    named = os.environ.get("KETCH_TEST_RUNTIME")
    if named:
        if not launcher_of_this_checkout(named) and os.path.realpath(named) != os.path.join(REPO, "bin",
                                                                                               "ketch-runtime"):
            raise RuntimeError(f"KETCH_TEST_RUNTIME={named}: not a launcher made from {REPO}")
        return named
    if launcher_of_this_checkout("/usr/local/bin/ketch-runtime"):
        return "/usr/local/bin/ketch-runtime"
    return os.path.join(REPO, "bin", "ketch-runtime")


RUNTIME = [_runtime()]
BUSYBOX = "/bin/busybox"


def make_busybox_rootfs(dest):
    """A minimal root: busybox-static with every applet as a symlink, plus the usual directories."""
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "usr/bin", "usr/sbin", "var", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        p = os.path.join(dest, a)
        if not os.path.lexists(p):
            os.makedirs(os.path.dirname(p), exist_ok=True)
            os.symlink("/bin/busybox", p)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    return dest


def base_config(args, **kw):
    from ketch.runtime.spec import default_config
    cfg = default_config()
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = list(args)
    cfg["root"] = {"path": "rootfs", "readonly": False}
    cfg["linux"].pop("resources", None)
    for k, v in kw.items():
        cfg[k] = v
    return cfg


class Bundle:
    """A bundle directory whose rootfs is a copy-free bind of a shared busybox root (read-only lower)."""

    def __init__(self, path, rootfs_src, cfg):
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.rootfs = os.path.join(path, "rootfs")
        shutil.copytree(rootfs_src, self.rootfs, symlinks=True)
        self.cfg = cfg
        self.write()

    def write(self):
        with open(os.path.join(self.path, "config.json"), "w") as f:
            json.dump(self.cfg, f, indent=1)


def unique(prefix="kt"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def tar_of(files):
    """An uncompressed tar of {name: bytes}, regular files in the given order (names as given, so a
    test can also write a hostile one)."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def log_message(stderr):
    """What a runtime's logrus lines on stderr say, unquoted: their msg values, a line each."""
    from ketch import logrus
    return "\n".join(logrus.messages(stderr))


def runtime(root, *args, check=False, timeout=60, **kw):
    """Run ketch-runtime; output goes through files, since a created init keeps its stdio open."""
    import tempfile
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        r = subprocess.run(RUNTIME + ["--root", root] + list(args), stdout=out, stderr=err, text=True,
                           timeout=timeout, **kw)
        out.seek(0)
        err.seek(0)
        r.stdout, r.stderr = out.read(), err.read()
    if check and r.returncode != 0:
        raise AssertionError(f"ketch-runtime {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def deep(cfg):
    return copy.deepcopy(cfg)


def remove_cgroup_tree(name):
    """rmdir /sys/fs/cgroup/*/name and everything under it, deepest first (a few tries: the
    kernel frees a cgroup a moment after its last process exits)."""
    import glob
    import time
    for _ in range(250):
        left = False
        for top in glob.glob(f"/sys/fs/cgroup/*/{name}"):
            for sub, _d, _f in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                try:
                    os.rmdir(sub)
                except FileNotFoundError:
                    pass
                except OSError:
                    left = True
        if not left:
            return
        time.sleep(0.02)
