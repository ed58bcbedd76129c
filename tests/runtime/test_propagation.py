"""rootfsPropagation and shared bind mounts, under ketch-runtime and runc; and a create that fails at
any step leaves no mount, cgroup, process or state behind."""

import glob
import os
import subprocess
import time

import pytest

from tests import helpers

SYS_ADMIN = ["CAP_SYS_ADMIN", "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def _root_line(r):
    """The optional fields of `/` in the container's mountinfo (`shared:N`, `unbindable`, ...)."""
    assert r.returncode == 0, r.stderr
    fields = r.stdout.splitlines()[0].split()
    assert fields[4] == "/", r.stdout
    return fields[6:fields.index("-")]


@pytest.fixture
def shared_dir(rt):
    """A private tmpfs mount point of the test's own, made rshared (never `/`), unmounted after."""
    d = os.path.join(rt.tmp, "shared")
    os.makedirs(d)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "ketch-shared", d], check=True)
    subprocess.run(["mount", "--make-private", d], check=True)
    subprocess.run(["mount", "--make-rshared", d], check=True)
    yield d
    subprocess.run(["umount", "-R", "-l", d], capture_output=True)


@pytest.mark.parametrize("prop,want", [("shared", "shared:"), ("slave", None), ("private", None),
                                       ("unbindable", "unbindable"), ("rshared", "shared:")])
def test_rootfs_propagation(rt, prop, want):
    def m(c):
        c["linux"]["rootfsPropagation"] = prop
    before = _mountpoints()
    res = rt.both(["sh", "-c", "cat /proc/self/mountinfo"], m)
    opt = _root_line(res["ketch"])
    if want:
        assert any(o.startswith(want) for o in opt), opt
    else:
        assert not opt, opt
    if prop != "unbindable":
        # runc 1.1 never applies the propagation to the pivoted root (runc 1.2 does, as the spec
        # says) and cannot bind a root whose parent it made unbindable; where it runs, it agrees
        # that nothing is shared with the host
        assert res["runc"].returncode == 0, res["runc"].stderr
        assert not any(o.startswith("master:") for o in _root_line(res["runc"]))
    assert not any(o.startswith("master:") for o in opt)
    assert _mountpoints() == before


def test_unknown_rootfs_propagation_refused(rt):
    b = rt.bundle(["true"], lambda c: c["linux"].__setitem__("rootfsPropagation", "sideways"))
    r = rt.rt("run", "--bundle", b.path, b.id)
    assert r.returncode != 0 and "rootfsPropagation=sideways is not supported" in r.stderr


def test_rshared_bind_from_the_host_is_bidirectional(rt, shared_dir):
    """Kubernetes' mountPropagation: Bidirectional (an rshared bind, the root rshared): a mount the
    container makes under the bind appears on the host, and one the host makes appears in the
    container; no other mount leaks."""
    before = _mountpoints()

    def m(c):
        c["mounts"].append({"destination": "/shared", "type": "bind", "source": shared_dir,
                            "options": ["rbind", "rshared"]})
        c["process"]["capabilities"] = {k: SYS_ADMIN for k in ("bounding", "effective", "permitted")}
        c["linux"]["rootfsPropagation"] = "rshared"     # as containerd's CRI sets it for Bidirectional

    for name in ("ketch", "runc"):
        sub = os.path.join(shared_dir, name)
        hostsub = os.path.join(shared_dir, "fromhost-" + name)
        os.makedirs(sub)
        os.makedirs(hostsub)
        b = rt.bundle(["sh", "-c", f"mount -t tmpfs inner /shared/{name} && echo hi > /shared/{name}/f && "
                                   f"while ! [ -e /shared/fromhost-{name}/g ]; do sleep 0.02; done; echo seen"], m)
        if name == "ketch":
            p = subprocess.Popen(helpers.RUNTIME + ["--root", rt.root, "run", "--bundle", b.path, b.id],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        else:
            p = subprocess.Popen(["runc", "--root", os.path.join(rt.tmp, "runc-state"), "run", "--bundle", b.path,
                                  b.id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(500):
                if os.path.exists(os.path.join(sub, "f")):
                    break
                p.poll()
                assert p.returncode is None, p.stderr.read()
                time.sleep(0.01)
            assert open(os.path.join(sub, "f")).read() == "hi\n", name
            subprocess.run(["mount", "-t", "tmpfs", "fromhost", hostsub], check=True)
            open(os.path.join(hostsub, "g"), "w").close()
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0 and out == "seen\n", (name, err)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            subprocess.run(["umount", "-l", hostsub], capture_output=True)
            subprocess.run(["umount", "-l", sub], capture_output=True)
        if name == "runc":
            rt.runc("delete", "--force", b.id)
    # only what the test itself mounted under its shared directory reached the host, now unmounted
    assert _mountpoints() == before


def _mountpoints():
    with open("/proc/self/mountinfo") as f:
        return sorted(ln.split()[4] for ln in f if "ketch-rt-" in ln.split()[4])


def _snapshot(rt):
    """What a create may leave on the host: mounts, the test's cgroups, processes naming the test's
    directory, the state directory's entries."""
    with open("/proc/self/mountinfo") as f:       # the test's own tree (others share the machine)
        mounts = sorted(" ".join(ln.split()[3:5]) for ln in f if ln.split()[4].startswith(rt.tmp))
    cgroups = sorted(glob.glob(f"/sys/fs/cgroup/*/{rt.cg_parent}/**/", recursive=True))
    procs = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if rt.tmp.encode() in cmd and int(d[6:]) != os.getpid():
            procs.append(cmd)
    state = sorted(os.listdir(rt.root)) if os.path.isdir(rt.root) else []
    return {"mounts": mounts, "cgroups": [c for c in cgroups if c.rstrip("/").split("/")[-1] != rt.cg_parent],
            "procs": procs, "state": state}


def _hook(path):
    return [{"path": path}]


FAILURES = {
    # the step, and what the config does to fail there
    "console socket": (lambda c: c["process"].__setitem__("terminal", True), ["--console-socket", "/nonexistent"]),
    "bind source": (lambda c: c["mounts"].append({"destination": "/x", "type": "bind", "source": "/nonexistent",
                                                  "options": ["rbind"]}), []),
    "last mount": (lambda c: c["mounts"].append({"destination": "/y", "type": "nosuchfs", "source": "none"}), []),
    "cgroup set": (lambda c: c["linux"].__setitem__("resources", {"cpu": {"cpus": "4096"}}), []),
    "prestart hook": (lambda c: c.__setitem__("hooks", {"prestart": _hook("/bin/false")}), []),
    "createRuntime hook": (lambda c: c.__setitem__("hooks", {"createRuntime": _hook("/bin/false")}), []),
    "createContainer hook": (lambda c: c.__setitem__("hooks", {"createContainer": _hook("/bin/false")}), []),
    "sysctl": (lambda c: c["linux"].__setitem__("sysctl", {"kernel.no_such_key": "1"}), []),
    "executable": (lambda c: c["process"].__setitem__("args", ["/no/such/binary"]), []),
    "cwd": (lambda c: c["process"].__setitem__("cwd", "/etc/passwd/x"), []),
    "oom_score_adj": (lambda c: c["process"].__setitem__("oomScoreAdj", 5000), []),
    "pid file": (lambda c: None, ["--pid-file", "/nonexistent/dir/pid"]),
}


@pytest.mark.parametrize("step", sorted(FAILURES))
def test_failed_create_leaves_nothing(rt, shared_dir, step):
    """The root lies inside an rshared mount point and rootfsPropagation is rshared, so a mount of
    the container that joined the host's peer group would show on the host; each step's failure
    is checked to leave the host as it was."""
    mutate, extra = FAILURES[step]
    root = os.path.join(shared_dir, helpers.unique("root"))

    def m(c):
        c["root"]["path"] = root
        c["linux"]["rootfsPropagation"] = "rshared"
        mutate(c)
    b = rt.bundle(["true"], m)
    subprocess.run(["cp", "-a", b.rootfs, root], check=True)
    os.makedirs(rt.root, exist_ok=True)
    before = _snapshot(rt)
    r = rt.rt("create", "--bundle", b.path, *extra, b.id)
    assert r.returncode != 0, f"{step}: create succeeded"
    assert r.stderr.strip(), step
    after = _snapshot(rt)
    assert after == before, step
