"""A config with no namespaces at all runs in the host's namespaces, as under runc.

runc itself is not run on such a bundle here: without a mount namespace it binds the root onto
itself and remounts `/` rslave in the host's mount namespace, and leaves both behind, which this
shared machine cannot afford. Ketch makes the spec's mounts in the host's namespace too (that is
what the config asks for) and detaches them at delete."""

import os

NS = ("mnt", "pid", "net", "uts", "ipc", "cgroup", "user")


def _no_namespaces(c, mounts=True):
    c["linux"]["namespaces"] = []
    c.pop("hostname", None)
    c["linux"].pop("maskedPaths", None)     # refused without a mount namespace, as by runc
    c["linux"].pop("readonlyPaths", None)
    c["mounts"] = [{"destination": "/proc", "type": "proc", "source": "proc"}] if mounts else []


def _mountpoints(tmp):
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(tmp)]


def test_no_namespaces_runs_in_the_hosts(rt):
    script = "; ".join(f"stat -L -c %i /proc/self/ns/{n}" for n in NS) + "; echo pid=$$"
    r = rt.run(["sh", "-c", script], _no_namespaces)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[:len(NS)] == [str(os.stat(f"/proc/self/ns/{n}").st_ino) for n in NS]
    assert lines[-1] != "pid=1"
    assert _mountpoints(rt.tmp) == []          # the proc mount was detached at delete


def test_no_namespaces_without_proc(rt):
    """No /proc in the root: the init still reaches the exec fifo."""
    r = rt.run(["sh", "-c", "ls /proc | wc -l; echo ok"], lambda c: _no_namespaces(c, mounts=False))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "ok"]


def test_no_namespaces_create_delete_detaches_mounts(rt):
    b = rt.bundle(["sleep", "100"], _no_namespaces)
    rt.rt("create", "--bundle", b.path, b.id, check=True)
    assert _mountpoints(rt.tmp) == [os.path.join(b.rootfs, "proc")]
    rt.rt("delete", "--force", b.id, check=True)
    assert _mountpoints(rt.tmp) == []


def test_what_needs_a_namespace_of_its_own_is_refused_as_by_runc(rt):
    """A hostname without a UTS namespace, masked paths without a mount namespace: refused at
    create under both runtimes, in runc's words."""
    cases = [(lambda c: c.__setitem__("hostname", "box"), "unable to set hostname without a private UTS namespace"),
             (lambda c: c["linux"].__setitem__("maskedPaths", ["/proc/kcore"]),
              "unable to restrict sys entries without a private MNT namespace")]
    for change, words in cases:
        def m(c, change=change):
            _no_namespaces(c)
            change(c)
        res = rt.both(["true"], m)
        for name, r in res.items():
            assert r.returncode != 0 and words in r.stderr, (name, r.stderr)
