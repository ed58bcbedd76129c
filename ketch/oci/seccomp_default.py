"""Docker's default seccomp profile, and its resolution into an OCI linux.seccomp object.

``DEFAULT_PROFILE`` is moby's profiles/seccomp/default.json (github.com/moby/profiles/seccomp v0.2.3)
as data: the OCI fields (defaultAction, defaultErrnoRet, syscalls[names, action, errnoRet, args]) plus Docker's
three extensions, which are not OCI and must be resolved before a runtime sees them:

- ``archMap``: the native architecture and the sub-architectures it can also run;
- ``includes`` / ``excludes`` on a rule: keep the rule only if the container's bounding
  set has (``caps``) / the target is (``arches``) / the kernel is at least (``minKernel``).

``profile_for(capabilities, arch)`` does what moby's setupSeccomp does and returns a
plain runtime-spec object for ``ketch.linux.seccomp.load_filter``. A syscall that is not
listed gets EPERM; ``clone3`` gets ENOSYS without CAP_SYS_ADMIN so that glibc falls back
to ``clone``, whose namespace flags the profile then checks.
"""

import os

from ketch.errors import InvalidArgument

_ALLOW = "SCMP_ACT_ALLOW"

# moby's allow-list for every container (profiles/seccomp/default.json, first rule)
_ALWAYS = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday
getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64
ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset
landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listmount listxattr
listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock
mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect
open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease
pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename
renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select
semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg
sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer
setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid
setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount statx
symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate
truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat utimensat_time64
utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()

# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: clone must have none of them
_CLONE_NS_MASK = 2114060288


def _rule(names, action=_ALLOW, **extra):
    r = {"names": names.split() if isinstance(names, str) else names, "action": action}
    r.update(extra)
    return r


def _eq0(value):
    return [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]


DEFAULT_PROFILE: dict = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],  # moby also maps mips, s390x, riscv64 and loongarch64; Ketch targets these two families
    "syscalls": [
        _rule(_ALWAYS),
        _rule("process_vm_readv process_vm_writev ptrace", includes={"minKernel": "4.8"}),
        # socket: every family but AF_ALG (38) and AF_VSOCK (40)
        _rule("socket", args=[{"index": 0, "value": 38, "op": "SCMP_CMP_LT"}]),
        _rule("socket", args=[{"index": 0, "value": 39, "op": "SCMP_CMP_EQ"}]),
        _rule("socket", args=[{"index": 0, "value": 40, "op": "SCMP_CMP_GT"}]),
        # personality: only PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26 and the query
        _rule("personality", args=_eq0(0)),
        _rule("personality", args=_eq0(8)),
        _rule("personality", args=_eq0(131072)),
        _rule("personality", args=_eq0(131080)),
        _rule("personality", args=_eq0(4294967295)),
        _rule("sync_file_range2 swapcontext", includes={"arches": ["ppc64le"]}),
        _rule("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
              includes={"arches": ["arm", "arm64"]}),
        _rule("arch_prctl", includes={"arches": ["amd64", "x32"]}),
        _rule("modify_ldt", includes={"arches": ["amd64", "x32", "x86"]}),
        _rule("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr", includes={"arches": ["s390", "s390x"]}),
        _rule("riscv_flush_icache", includes={"arches": ["riscv64"]}),
        _rule("open_by_handle_at", includes={"caps": ["CAP_DAC_READ_SEARCH"]}),
        _rule("bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie lsm_get_self_attr "
              "lsm_list_modules lsm_set_self_attr mount "
              "mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname "
              "sethostname setns syslog umount umount2 unshare", includes={"caps": ["CAP_SYS_ADMIN"]}),
        _rule("clone", args=[{"index": 0, "value": _CLONE_NS_MASK, "op": "SCMP_CMP_MASKED_EQ"}],
              excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}),
        _rule("clone", args=[{"index": 1, "value": _CLONE_NS_MASK, "op": "SCMP_CMP_MASKED_EQ"}],
              comment="s390 parameter ordering for clone is different",
              includes={"arches": ["s390", "s390x"]}, excludes={"caps": ["CAP_SYS_ADMIN"]}),
        _rule("clone3", "SCMP_ACT_ERRNO", errnoRet=38, excludes={"caps": ["CAP_SYS_ADMIN"]}),
        _rule("reboot", includes={"caps": ["CAP_SYS_BOOT"]}),
        _rule("chroot", includes={"caps": ["CAP_SYS_CHROOT"]}),
        _rule("delete_module init_module finit_module", includes={"caps": ["CAP_SYS_MODULE"]}),
        _rule("acct", includes={"caps": ["CAP_SYS_PACCT"]}),
        _rule("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
              includes={"caps": ["CAP_SYS_PTRACE"]}),
        _rule("iopl ioperm", includes={"caps": ["CAP_SYS_RAWIO"]}),
        _rule("settimeofday stime clock_settime clock_settime64", includes={"caps": ["CAP_SYS_TIME"]}),
        _rule("vhangup", includes={"caps": ["CAP_SYS_TTY_CONFIG"]}),
        _rule("get_mempolicy mbind set_mempolicy set_mempolicy_home_node", includes={"caps": ["CAP_SYS_NICE"]}),
        _rule("syslog", includes={"caps": ["CAP_SYSLOG"]}),
        _rule("bpf", includes={"caps": ["CAP_BPF"]}),
        _rule("perf_event_open", includes={"caps": ["CAP_PERFMON"]}),
    ],
}

# Docker's arch words (Go GOARCH) for what uname/the OCI platform may call them
_ARCH_ALIASES = {
    "amd64": "amd64", "x86_64": "amd64",
    "386": "x86", "x86": "x86", "i386": "x86", "i686": "x86",
    "x32": "x32",
    "arm64": "arm64", "aarch64": "arm64",
    "arm": "arm", "armv7l": "arm", "armv6l": "arm", "armhf": "arm",
}
# native seccomp architecture of each arch word
_NATIVE = {"amd64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32",
           "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM"}


def _kernel_at_least(release, minimum):
    def parts(v):
        out = []
        for p in v.split(".")[:2]:
            digits = "".join(c for c in p if c.isdigit()) if p else ""
            out.append(int(digits) if digits else 0)
        return tuple(out + [0] * (2 - len(out)))
    return parts(release) >= parts(minimum)


def profile_for(capabilities, arch=None, kernel=None, profile=None) -> dict:
    """Resolve a Docker-format profile for one container into a runtime-spec linux.seccomp.

    capabilities: the container's bounding set (names); arch: Docker/uname word for the
    target ("amd64", "x86_64", "arm64", "aarch64", "arm", "386"), host if None; kernel: the
    release to test minKernel against, host if None; profile: DEFAULT_PROFILE if None.
    """
    if profile is None:
        profile = DEFAULT_PROFILE
    raw = arch if arch is not None else os.uname().machine
    arch = _ARCH_ALIASES.get(raw)
    if arch is None:
        raise InvalidArgument(f"seccomp profile: unsupported architecture {raw!r}")
    caps = set(capabilities or [])
    release = kernel if kernel is not None else os.uname().release

    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument("seccomp profile: use either architectures or archMap, not both")
    out = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if profile.get("architectures"):
        out["architectures"] = list(profile["architectures"])
    else:
        native = _NATIVE[arch]
        arches = [native]
        for entry in profile.get("archMap") or []:
            if entry.get("architecture") == native:
                arches += list(entry.get("subArchitectures") or [])
        out["architectures"] = arches
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    for key in ("listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = profile[key]

    syscalls = []
    for rule in profile.get("syscalls") or []:
        inc = rule.get("includes") or {}
        exc = rule.get("excludes") or {}
        if exc.get("arches") and arch in exc["arches"]:
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if any(c in caps for c in exc.get("caps") or []):
            continue
        if not all(c in caps for c in inc.get("caps") or []):
            continue
        if inc.get("minKernel") and not _kernel_at_least(release, inc["minKernel"]):
            continue
        names = list(rule.get("names") or [])
        if rule.get("name"):
            names.append(rule["name"])
        new = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            new["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            new["args"] = [dict(a) for a in rule["args"]]
        syscalls.append(new)
    out["syscalls"] = syscalls
    return out
