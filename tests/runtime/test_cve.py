"""Regression tests for known runtime escapes."""

import errno
import hashlib
import os
import subprocess
import tempfile
import time

import pytest

from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYLIBS = ("/usr/lib/python3.11", "/lib/x86_64-linux-gnu", "/lib64")

# Run inside the container as the runtime's own binary (the kernel resolves the shebang through the
# exec'ing process's /proc/self/exe). A child keeps an O_PATH handle and, once the runtime's exec
# process is gone, reopens it for writing. It never truncates or writes a file it could open: a
# writable interpreter is reported (OPENED), not destroyed; only a sealed memfd copy, which is no
# host file, is written to, to show the seal refuses it. O_TRUNC is tried only once the handle is
# seen on a read-only mount, where it must fail with EROFS before anything happens.
ATTACK = """#!/proc/self/exe
import os, time
exe = os.readlink('/proc/self/exe')
ro = bool(os.statvfs('/proc/self/exe').f_flag & os.ST_RDONLY)
res = [('RO' if ro else 'RW'), exe.split()[0]]
if exe.startswith('/memfd:'):
    import fcntl
    r = os.open('/proc/self/exe', os.O_RDONLY)
    want = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
    res.append('SEALED' if fcntl.fcntl(r, fcntl.F_GET_SEALS) & want == want else 'UNSEALED')
fd = os.open('/proc/self/exe', os.O_PATH)
if os.fork():
    os._exit(0)
time.sleep(0.3)
for i in range(5):
    for flags in (os.O_WRONLY, os.O_RDWR) + ((os.O_WRONLY | os.O_TRUNC,) if ro else ()):
        try:
            w = os.open('/proc/self/fd/%d' % fd, flags)
        except OSError as e:
            res.append(str(e.errno))
            continue
        if exe.startswith('/memfd:'):
            try:
                os.pwrite(w, b'pwned', 0)
                res.append('WROTE')
            except OSError as e:
                res.append('memfd-' + str(e.errno))
        else:
            res.append('OPENED')
        os.close(w)
    time.sleep(0.05)
open('/result', 'w').write(' '.join(res))
"""


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _launchers(tmp):
    """(name, argv, env) of each way the runtime is started: the installed launcher, the repository's,
    the host's python3 on the repository's launcher script with no view yet (a view of its own is
    made), and a sealed memfd copy instead of a view."""
    env = dict(os.environ)
    own_views = os.path.join(tmp, "views")
    return [
        ("installed", helpers.RUNTIME, env),
        ("repository", [os.path.join(REPO, "bin", "ketch-runtime")], env),
        ("python3, no view yet", ["/usr/bin/python3", "-IS", os.path.join(REPO, "bin", "ketch-runtime")],
         {**env, "KETCH_RUNTIME_EXE_DIR": own_views}),
        ("python3, memfd", ["/usr/bin/python3", "-IS", os.path.join(REPO, "bin", "ketch-runtime")],
         {**env, "KETCH_RUNTIME_SEAL": "memfd"}),
    ], own_views


@pytest.mark.parametrize("way", range(4), ids=["installed", "repository", "python3-no-view", "memfd"])
def test_cve_2019_5736_proc_self_exe_cannot_overwrite_runtime(rt, way):
    """A `#!/proc/self/exe` script run by `exec` makes the kernel run the runtime's own interpreter
    inside the container: whichever way the runtime was started, that interpreter is a read-only
    view of the host's python3 (or a sealed memfd copy), the write is refused by the kernel (EROFS,
    or the seal's EPERM: not luck), and the host's interpreter is untouched."""
    from ketch.runtime import sealed
    launchers, own_views = _launchers(rt.tmp)
    name, argv, env = launchers[way]
    host_py = os.path.realpath("/usr/bin/python3")
    before = _sha(host_py)

    def m(c):
        # the image ships python3's stdlib and libraries, as a debian image with python3 would
        for lib in PYLIBS:
            c["mounts"].append({"destination": lib, "type": "bind", "source": lib, "options": ["rbind", "ro"]})
    b = rt.bundle(["sleep", "30"], m)
    with open(os.path.join(b.rootfs, "evil"), "w") as f:
        f.write(ATTACK)
    os.chmod(os.path.join(b.rootfs, "evil"), 0o755)

    def run(*args):
        # output through files: a detached init keeps its stdio open
        with tempfile.TemporaryFile("w+") as out:
            r = subprocess.run(argv + ["--root", rt.root] + list(args), env=env, stdout=out,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            out.seek(0)
            r.stderr = out.read()
        return r
    try:
        r = run("run", "--detach", "--bundle", b.path, b.id)
        assert r.returncode == 0, r.stderr
        r = run("exec", b.id, "/evil")
        assert r.returncode == 0, r.stderr
        result = os.path.join(b.rootfs, "result")
        for _ in range(60):
            if os.path.exists(result) and os.path.getsize(result):
                break
            time.sleep(0.05)
        res = open(result).read().split()
    finally:
        run("delete", "--force", b.id)
        if way == 2:
            sealed.remove_view(host_py, own_views)
    assert "OPENED" not in res and "WROTE" not in res, (name, res)
    if way == 3:
        assert res[1].startswith("/memfd:ketch-runtime"), res
        assert res[2] == "SEALED", res                     # no write can reach it, running or not
        assert set(res[3:]) <= {str(errno.ETXTBSY), f"memfd-{errno.EPERM}"}, res
    else:
        assert res[:2] == ["RO", sealed.view_path(host_py, own_views if way == 2 else None)], res
        assert str(errno.EROFS) in res, res                # refused by the mount, whoever runs python3
        assert set(res[2:]) <= {str(errno.EROFS), str(errno.ETXTBSY)}, res
    assert _sha(host_py) == before


def test_runtime_view_follows_an_upgraded_interpreter(tmp_path):
    """The view is of the host's file, not a copy: when the interpreter is replaced (a new inode, as
    dpkg's rename makes), the next call unmounts the stale view and binds the new file."""
    from ketch.runtime import sealed
    exe = tmp_path / "bin" / "python3"
    exe.parent.mkdir()
    exe.write_bytes(b"old interpreter")
    views = str(tmp_path / "views")
    try:
        v = sealed.ensure_view(str(exe), views)
        assert open(v, "rb").read() == b"old interpreter" and sealed.exe_is_sealed(v)
        with pytest.raises(OSError) as e:
            open(v, "r+b")
        assert e.value.errno == errno.EROFS
        assert sealed.ensure_view(str(exe), views) == v          # current: left as it is
        new = tmp_path / "bin" / "python3.new"
        new.write_bytes(b"new interpreter")
        os.rename(new, exe)                                      # the upgrade
        assert sealed.ensure_view(str(exe), views) == v
        assert open(v, "rb").read() == b"new interpreter" and os.path.samefile(v, exe)
        with open("/proc/self/mountinfo") as f:
            assert sum(line.split()[4] == v for line in f) == 1  # the stale view went
    finally:
        sealed.remove_view(str(exe), views)


def test_cve_2019_5736_runtime_exe_not_visible_during_exec(rt):
    """While `exec` is inside the container's namespaces the runtime is non-dumpable, so the
    container cannot open /proc/PID/exe of it."""
    b = rt.bundle(["sh", "-c", "while true; do for p in /proc/[0-9]*; do "
                   "l=$(readlink $p/exe 2>/dev/null) && case $l in *python*|*ketch*) echo $l >> /seen;; esac; "
                   "done; done"])
    rt.rt("run", "--detach", "--bundle", b.path, b.id, check=True)
    for _ in range(15):
        rt.rt("exec", b.id, "true", check=True)
    time.sleep(0.2)
    seen = os.path.join(b.rootfs, "seen")
    assert not os.path.exists(seen), open(seen).read()
    rt.rt("delete", "--force", b.id, check=True)


def test_cve_2024_21626_no_host_fd_leaks(rt):
    """fds the caller leaves open (a host directory here) never reach the container."""
    host_dir = os.open(rt.tmp, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(host_dir, True)
    try:
        b = rt.bundle(["sh", "-c", "ls /proc/self/fd"])
        r = subprocess.run(helpers.RUNTIME + ["--root", rt.root, "run", "--bundle", b.path, b.id],
                           capture_output=True, text=True, pass_fds=(host_dir,), timeout=60)
        assert r.returncode == 0, r.stderr
        fds = sorted(int(x) for x in r.stdout.split())
        assert fds == [0, 1, 2, 3], fds          # 3 is ls's own directory handle
    finally:
        os.close(host_dir)


def test_cve_2024_21626_cwd_cannot_start_outside_root(rt):
    host_dir = os.open(rt.tmp, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(host_dir, True)
    try:
        for fd in range(3, 12):
            b = rt.bundle(["sh", "-c", "pwd; ls"],
                          lambda c, fd=fd: c["process"].__setitem__("cwd", f"/proc/self/fd/{fd}"))
            r = subprocess.run(helpers.RUNTIME + ["--root", rt.root, "run", "--bundle", b.path, b.id],
                               capture_output=True, text=True, pass_fds=(host_dir,), timeout=60)
            assert rt.tmp not in r.stdout
            assert "state" not in r.stdout.split()          # the host dir's listing never shows
        # exec --cwd likewise
        b = rt.bundle(["sleep", "30"])
        rt.rt("run", "--detach", "--bundle", b.path, b.id, check=True)
        for fd in range(3, 12):
            r = subprocess.run(helpers.RUNTIME + ["--root", rt.root, "exec", "--cwd", f"/proc/self/fd/{fd}", b.id,
                                                  "sh", "-c", "pwd; ls"],
                               capture_output=True, text=True, pass_fds=(host_dir,), timeout=60)
            assert rt.tmp not in r.stdout and "state" not in r.stdout.split(), (fd, r.stdout)
        rt.rt("delete", "--force", b.id, check=True)
    finally:
        os.close(host_dir)
