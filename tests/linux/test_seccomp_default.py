"""Docker's default profile: resolution by capabilities/arch, and its effect in a real child."""

import errno
import os
import socket

import pytest

from ketch.errors import InvalidArgument
from ketch.linux import seccomp, syscalls
from ketch.oci.default_caps import DEFAULT_CAPS, default_capabilities
from ketch.oci.seccomp_default import DEFAULT_PROFILE, profile_for
from tests.linux.childproc import errno_of, exec_in_child, raw, run_in_child

AF_VSOCK = 40


def rules_for(profile, name):
    return [r for r in profile["syscalls"] if name in r["names"]]


def test_architectures_from_arch_map():
    assert profile_for(DEFAULT_CAPS, "amd64")["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert profile_for(DEFAULT_CAPS, "x86_64")["architectures"][0] == "SCMP_ARCH_X86_64"
    assert profile_for(DEFAULT_CAPS, "aarch64")["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert profile_for(DEFAULT_CAPS, "arm")["architectures"] == ["SCMP_ARCH_ARM"]
    with pytest.raises(InvalidArgument, match="sparc"):
        profile_for(DEFAULT_CAPS, "sparc")


def test_arch_conditional_rules():
    amd = profile_for(DEFAULT_CAPS, "amd64")
    arm = profile_for(DEFAULT_CAPS, "arm64")
    assert rules_for(amd, "arch_prctl") and not rules_for(arm, "arch_prctl")
    assert rules_for(arm, "set_tls") and not rules_for(amd, "set_tls")
    assert not rules_for(amd, "s390_runtime_instr")


def test_capability_conditional_rules():
    plain = profile_for(DEFAULT_CAPS, "amd64")
    admin = profile_for(DEFAULT_CAPS + ["CAP_SYS_ADMIN"], "amd64")
    # without CAP_SYS_ADMIN: clone only without namespace flags, clone3 gets ENOSYS, no mount
    assert [r.get("args") for r in rules_for(plain, "clone")] == [
        [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in plain["syscalls"]
    assert not rules_for(plain, "mount")
    # with it: unconditional clone/clone3/mount/unshare, no ENOSYS rule
    assert all(r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for r in rules_for(admin, "clone3"))
    assert rules_for(admin, "mount") and rules_for(admin, "unshare")
    assert rules_for(plain, "ptrace")  # the minKernel 4.8 rule applies on this kernel
    assert not rules_for(profile_for(DEFAULT_CAPS, "amd64", kernel="4.4.0"), "ptrace")
    assert rules_for(profile_for(DEFAULT_CAPS + ["CAP_SYS_PTRACE"], "amd64", kernel="4.4.0"), "ptrace")
    # resolved output is plain OCI
    for r in plain["syscalls"]:
        assert set(r) <= {"names", "action", "errnoRet", "args"}
    assert "archMap" not in plain and plain["defaultAction"] == "SCMP_ACT_ERRNO" and plain["defaultErrnoRet"] == 1


def test_profiles_validate():
    for arch in ("amd64", "arm64", "arm", "386"):
        seccomp.validate(profile_for(DEFAULT_CAPS, arch))
    seccomp.validate(profile_for(DEFAULT_CAPS + ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"], "amd64"))
    with pytest.raises(InvalidArgument, match="includes"):
        seccomp.validate(DEFAULT_PROFILE)  # the Docker format is refused unresolved


def test_default_caps():
    caps = default_capabilities()
    assert caps["bounding"] == DEFAULT_CAPS and "inheritable" not in caps
    assert len(DEFAULT_CAPS) == 14 and "CAP_SYS_ADMIN" not in DEFAULT_CAPS


def test_default_profile_blocks_and_allows():
    spec = profile_for(DEFAULT_CAPS, None)

    def child():
        seccomp.load_filter(spec)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.close()
        return {
            "keyctl": raw("keyctl", 0, 0),  # KEYCTL_GET_KEYRING_ID: not in the profile
            "unshare_user": errno_of(syscalls.unshare, syscalls.CLONE_NEWUSER),
            "unshare_uts": errno_of(syscalls.unshare, syscalls.CLONE_NEWUTS),
            "clone3": raw("clone3", 0, 0),
            "mount": errno_of(syscalls.mount, "none", "/nonexistent", "tmpfs"),
            "vsock": errno_of(socket.socket, AF_VSOCK, socket.SOCK_STREAM),
            "personality_query": raw("personality", 0xFFFFFFFF),
            "personality_bad": raw("personality", 0x0400000),  # READ_IMPLIES_EXEC
            "getpid": os.getpid() > 0,
        }

    out, status = run_in_child(child)
    assert out == {"keyctl": errno.EPERM, "unshare_user": errno.EPERM, "unshare_uts": errno.EPERM,
                   "clone3": errno.ENOSYS, "mount": errno.EPERM, "vsock": errno.EPERM,
                   "personality_query": 0, "personality_bad": errno.EPERM, "getpid": True}
    assert os.WEXITSTATUS(status) == 0


def test_default_profile_lets_programs_run():
    spec = profile_for(DEFAULT_CAPS, None)
    out, status = exec_in_child(lambda: seccomp.load_filter(spec),
                                ["/bin/sh", "-c", "echo hello; ls / >/dev/null && echo listed; "
                                 "(echo sub) | cat"])
    assert out == b"hello\nlisted\nsub\n" and os.WEXITSTATUS(status) == 0


def test_sys_admin_profile_allows_namespaces():
    spec = profile_for(DEFAULT_CAPS + ["CAP_SYS_ADMIN"], None)

    def child():
        seccomp.load_filter(spec)
        return [errno_of(syscalls.unshare, syscalls.CLONE_NEWUTS), raw("keyctl", 0, 0)]

    assert run_in_child(child)[0] == [0, errno.EPERM]
