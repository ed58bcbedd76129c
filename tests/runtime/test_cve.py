"""Regression tests for known runtime escapes."""

import errno
import hashlib
import os
import subprocess
import time

from tests import helpers


def _interpreter():
    with open(helpers.RUNTIME[0]) as f:
        line = f.readline()
    return line[2:].split()[0]


def _assert_immutable(interp):
    attrs = subprocess.run(["lsattr", interp], capture_output=True, text=True).stdout.split()
    assert attrs and "i" in attrs[0], (f"{helpers.RUNTIME[0]} runs {interp}, which is not immutable "
                                       f"(lsattr: {attrs}): run `make install`")
    try:
        os.close(os.open(interp, os.O_WRONLY))
    except PermissionError:
        return
    raise AssertionError(f"the runtime's interpreter {interp} is writable")


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_cve_2019_5736_proc_self_exe_cannot_overwrite_runtime(rt):
    """A `#!/proc/self/exe` script run by `exec` makes the kernel run the runtime's own binary inside
    the container; a child keeps an O_PATH handle and reopens it for writing once the parent exits.
    The runtime's interpreter must stay untouched and the write must be refused (EPERM, not luck)."""
    interp = _interpreter()
    # the second line of defence, checked before the attack so that a writable interpreter (a
    # launcher not made by `make install`) is reported, never overwritten
    _assert_immutable(interp)
    before = _sha(interp)
    pylib = "/usr/lib/python3.11"

    def m(c):
        # the image ships a python stdlib, as a debian image with python3 would
        c["mounts"].append({"destination": pylib, "type": "bind", "source": pylib, "options": ["rbind", "ro"]})
    b = rt.bundle(["sleep", "30"], m)
    with open(os.path.join(b.rootfs, "evil"), "w") as f:
        f.write("#!/proc/self/exe\n"
                "import os, time\n"
                "fd = os.open('/proc/self/exe', os.O_PATH)\n"
                "if os.fork():\n"
                "    os._exit(0)\n"
                "time.sleep(0.5)\n"
                "res = []\n"
                "for i in range(20):\n"
                "    try:\n"
                "        w = os.open('/proc/self/fd/%d' % fd, os.O_WRONLY)\n"
                "        os.write(w, b'pwned')\n"
                "        res.append('WROTE')\n"
                "        break\n"
                "    except OSError as e:\n"
                "        res.append(str(e.errno))\n"
                "    time.sleep(0.05)\n"
                "open('/result', 'w').write(' '.join(res))\n")
    os.chmod(os.path.join(b.rootfs, "evil"), 0o755)
    rt.rt("run", "--detach", "--bundle", b.path, b.id, check=True)
    r = rt.rt("exec", b.id, "/evil")
    result = os.path.join(b.rootfs, "result")
    for _ in range(40):
        if os.path.exists(result) and os.path.getsize(result):
            break
        time.sleep(0.05)
    text = open(result).read() if os.path.exists(result) else ""
    rt.rt("delete", "--force", b.id, check=True)
    assert "WROTE" not in text
    if text:
        assert str(errno.EPERM) in text.split(), text      # immutable: refused whoever still runs it
    else:
        # this kernel does not even let the container resolve the runtime's exe (another mount namespace)
        assert r.returncode != 0 and "/evil" in r.stderr, r.stderr
    assert _sha(interp) == before
    _assert_immutable(interp)       # and it holds whatever the kernel did


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
