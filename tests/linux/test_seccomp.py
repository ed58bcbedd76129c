"""Seccomp filters loaded into forked children of the test process (real kernel, real libseccomp)."""

import errno
import os
import signal
import socket

import pytest

from ketch.errors import InvalidArgument
from ketch.linux import seccomp, syscalls
from tests.linux.childproc import errno_of, killed_by, raw, run_in_child

ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] if os.uname().machine == "x86_64" else []


def allow_but(*rules, **extra):
    spec = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ARCHES, "syscalls": list(rules)}
    spec.update(extra)
    return spec


def deny(names, ret=None, args=None, action="SCMP_ACT_ERRNO"):
    rule = {"names": names, "action": action}
    if ret is not None:
        rule["errnoRet"] = ret
    if args is not None:
        rule["args"] = args
    return rule


def test_errno_eperm_blocks_mkdir_only(tmp_path):
    spec = allow_but(deny(["mkdir", "mkdirat"], 1))

    def child():
        seccomp.load_filter(spec)
        with open(tmp_path / "file", "w") as f:  # other calls still work
            f.write("x")
        return [errno_of(os.mkdir, tmp_path / "d"), os.getpid() > 0, (tmp_path / "file").read_text()]

    out, status = run_in_child(child)
    assert out == [errno.EPERM, True, "x"]
    assert not (tmp_path / "d").exists()
    assert os.WEXITSTATUS(status) == 0


def test_errno_ret_enosys(tmp_path):
    spec = allow_but(deny(["mkdir", "mkdirat"], errno.ENOSYS))

    def child():
        seccomp.load_filter(spec)
        return errno_of(os.mkdir, tmp_path / "d")

    assert run_in_child(child)[0] == errno.ENOSYS


def test_unknown_syscall_names_are_skipped(tmp_path):
    spec = allow_but(deny(["no_such_syscall_ketch", "mkdir", "mkdirat"], errno.EROFS))

    def child():
        seccomp.load_filter(spec)
        return errno_of(os.mkdir, tmp_path / "d")

    assert run_in_child(child)[0] == errno.EROFS


def test_arg_eq_denies_only_matching_family():
    # a distinctive errno proves the failure comes from the filter
    spec = allow_but(deny(["socket"], errno.EBADFD, [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"}]))

    def child():
        seccomp.load_filter(spec)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.close()
        return [errno_of(socket.socket, socket.AF_INET, socket.SOCK_STREAM),
                errno_of(socket.socket, socket.AF_INET6, socket.SOCK_STREAM)]

    assert run_in_child(child)[0] == [errno.EBADFD, 0]


def test_repeated_index_is_or_distinct_indexes_are_and():
    spec = allow_but(
        # same index twice: two rules, either family is denied
        deny(["socket"], errno.EBADFD, [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
                                        {"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"}]),
        # distinct indexes: one rule, only AF_UNIX datagram sockets (type masked, Python adds SOCK_CLOEXEC)
        deny(["socketpair"], errno.EL2HLT, [{"index": 0, "value": socket.AF_UNIX, "op": "SCMP_CMP_EQ"},
                                           {"index": 1, "value": 0xF, "valueTwo": socket.SOCK_DGRAM,
                                            "op": "SCMP_CMP_MASKED_EQ"}]),
    )

    def child():
        seccomp.load_filter(spec)
        ok = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in ok:
            s.close()
        return [errno_of(socket.socket, socket.AF_INET, socket.SOCK_STREAM),
                errno_of(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM),
                errno_of(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()),
                errno_of(socket.socketpair, socket.AF_UNIX, socket.SOCK_DGRAM)]

    assert run_in_child(child)[0] == [errno.EBADFD, errno.EBADFD, 0, errno.EL2HLT]


def test_gt_and_personality_query():
    spec = allow_but(
        deny(["umask"], errno.EDOM, [{"index": 0, "value": 0o077, "op": "SCMP_CMP_GT"}]),
        deny(["personality"], errno.ENOTUNIQ, [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]),
    )

    def child():
        seccomp.load_filter(spec)
        return [raw("umask", 0o022), raw("umask", 0o777),
                raw("personality", 0xFFFFFFFF), raw("personality", 0)]

    assert run_in_child(child)[0] == [0, errno.EDOM, errno.ENOTUNIQ, 0]


def test_default_errno_with_allow_list(tmp_path):
    allowed = ["read", "write", "close", "exit", "exit_group", "brk", "mmap", "munmap", "mremap",
               "madvise", "getpid", "rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "futex"]
    spec = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES, "architectures": ARCHES,
            "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]}

    def child():
        seccomp.load_filter(spec)
        return [os.getpid() > 0, errno_of(os.stat, "/"), errno_of(os.mkdir, tmp_path / "d")]

    assert run_in_child(child)[0] == [True, errno.EACCES, errno.EACCES]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"])
def test_kill_and_trap_deliver_sigsys(action):
    spec = allow_but(deny(["getppid"], action=action))

    def child():
        seccomp.load_filter(spec)
        os.getppid()
        return "survived"

    out, status = run_in_child(child)
    assert out is None and killed_by(status, signal.SIGSYS), status


def test_log_action_allows(tmp_path):
    spec = allow_but(deny(["mkdir", "mkdirat"], action="SCMP_ACT_LOG"), flags=["SECCOMP_FILTER_FLAG_LOG"])

    def child():
        seccomp.load_filter(spec)
        os.mkdir(tmp_path / "d")
        return True

    assert run_in_child(child)[0] is True and (tmp_path / "d").is_dir()


def test_tsync_and_spec_allow_flags_load(tmp_path):
    spec = allow_but(deny(["mkdir", "mkdirat"]),
                     flags=["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])

    def child():
        seccomp.load_filter(spec)
        return errno_of(os.mkdir, tmp_path / "d")

    assert run_in_child(child)[0] == errno.EPERM


def test_does_not_set_no_new_privs():
    def child():
        seccomp.load_filter(allow_but(deny(["mkdir"])))
        return syscalls.prctl(syscalls.PR_GET_NO_NEW_PRIVS)

    assert run_in_child(child)[0] == 0


@pytest.mark.parametrize("spec, word", [
    ({"defaultAction": "SCMP_ACT_ALLOWED"}, "SCMP_ACT_ALLOWED"),
    (allow_but(deny(["mkdir"], action="SCMP_ACT_DENY")), "SCMP_ACT_DENY"),
    (allow_but(deny(["mkdir"], args=[{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}])), "SCMP_CMP_ABOUT"),
    (allow_but(deny(["mkdir"], args=[{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}])), "index"),
    (allow_but(architectures=["SCMP_ARCH_Z80"]), "SCMP_ARCH_Z80"),
    (allow_but(flags=["SECCOMP_FILTER_FLAG_FAST"]), "SECCOMP_FILTER_FLAG_FAST"),
    (allow_but(deny(["mkdir"], action="SCMP_ACT_NOTIFY")), "listenerPath is not set"),
    (allow_but(deny(["write"], action="SCMP_ACT_NOTIFY"), listenerPath="/a.sock"), "for the write syscall"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/a.sock"}, "cannot be used as default action"),
    (allow_but(listenerMetadata="m"), "listenerMetadata is set without listenerPath"),
    (allow_but(deny(["mkdir"], action="SCMP_ACT_NOTIFY"), listenerPath=7), "listenerPath must be a string"),
    (allow_but(deny(["mkdir"], ret=1, action="SCMP_ACT_KILL")), "errnoRet"),
    (allow_but(deny(["mkdir"], ret=70000)), "errnoRet"),
    (allow_but({"names": [], "action": "SCMP_ACT_ERRNO"}), "names"),
    (allow_but({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}}), "includes"),
])
def test_invalid_specs_are_rejected_before_loading(spec, word):
    with pytest.raises(InvalidArgument, match=word):
        seccomp.validate(spec)
    # load_filter fails the same way without installing anything (in this process)
    with pytest.raises(InvalidArgument, match=word):
        seccomp.load_filter(spec)
    assert os.getppid() > 0


def test_without_nnp_or_cap_sys_admin_load_fails_and_with_nnp_succeeds(tmp_path):
    from ketch.linux import capabilities
    keep = {k: ["CAP_CHOWN"] for k in ("bounding", "effective", "permitted")}
    spec = allow_but(deny(["mkdir", "mkdirat"]))

    def child():
        capabilities.apply(keep)
        first = errno_of(seccomp.load_filter, spec)
        syscalls.set_no_new_privs()
        seccomp.load_filter(spec)
        return [first, errno_of(os.mkdir, tmp_path / "d")]

    assert run_in_child(child)[0] == [errno.EACCES, errno.EPERM]


def test_a_notifying_filter_hands_its_notify_fd_over(tmp_path):
    """on_listener gets the filter's notify fd right after the load (close-on-exec); once the
    last copy is closed (no agent), a notified syscall fails with ENOSYS instead of waiting.
    Without on_listener the load is an error: nobody could answer."""
    spec = allow_but(deny(["mkdir", "mkdirat"], action="SCMP_ACT_NOTIFY"), listenerPath="/nobody.sock")

    def child():
        got = []

        def take(fd):
            got.extend([os.readlink(f"/proc/self/fd/{fd}"), os.get_inheritable(fd)])
            os.close(fd)
        seccomp.load_filter(spec, take)
        return got + [errno_of(os.mkdir, tmp_path / "d")]

    def child_without():
        try:
            seccomp.load_filter(spec)
        except InvalidArgument as e:
            return str(e)

    assert run_in_child(child)[0] == ["anon_inode:seccomp notify", False, errno.ENOSYS]
    assert "no seccomp agent" in run_in_child(child_without)[0]
