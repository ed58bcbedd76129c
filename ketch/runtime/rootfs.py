"""The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.

Runs inside the container's init, in its new mount namespace, before pivot_root.
Every destination is resolved inside the root (symlinks included) before it is used,
so a hostile image cannot point a mount at the host (CVE-2018-15664 family).
"""

from __future__ import annotations

import errno
import os
import stat

from ketch.errors import InvalidArgument
from ketch.linux import syscalls as sc

# option -> (clear, flag): clear=True means the option removes the flag
_FLAGS = {
    "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY),
    "nosuid": (False, sc.MS_NOSUID), "suid": (True, sc.MS_NOSUID),
    "nodev": (False, sc.MS_NODEV), "dev": (True, sc.MS_NODEV),
    "noexec": (False, sc.MS_NOEXEC), "exec": (True, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS), "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC), "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK), "nomand": (True, sc.MS_MANDLOCK),
    "atime": (True, sc.MS_NOATIME), "noatime": (False, sc.MS_NOATIME),
    "diratime": (True, sc.MS_NODIRATIME), "nodiratime": (False, sc.MS_NODIRATIME),
    "relatime": (False, sc.MS_RELATIME), "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME), "nostrictatime": (True, sc.MS_STRICTATIME),
    "bind": (False, sc.MS_BIND), "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW), "symfollow": (True, sc.MS_NOSYMFOLLOW),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# recursive attributes (mount_setattr with AT_RECURSIVE): option -> (clear, MOUNT_ATTR_*), as runc's
REC_ATTRS = {
    "rro": (False, sc.MOUNT_ATTR_RDONLY), "rrw": (True, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, sc.MOUNT_ATTR_NOSUID), "rsuid": (True, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (False, sc.MOUNT_ATTR_NODEV), "rdev": (True, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (False, sc.MOUNT_ATTR_NOEXEC), "rexec": (True, sc.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, sc.MOUNT_ATTR_NODIRATIME), "rdiratime": (True, sc.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, sc.MOUNT_ATTR_RELATIME), "rnorelatime": (True, sc.MOUNT_ATTR_RELATIME),
    "rnoatime": (False, sc.MOUNT_ATTR_NOATIME), "ratime": (True, sc.MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, sc.MOUNT_ATTR_STRICTATIME), "rnostrictatime": (True, sc.MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, sc.MOUNT_ATTR_NOSYMFOLLOW), "rsymfollow": (True, sc.MOUNT_ATTR_NOSYMFOLLOW),
}
_IGNORED = {"tmpcopyup", "defaults", "idmap", "ridmap", *REC_ATTRS}


def rec_attrs(options: list[str] | None) -> tuple[int, int]:
    """(attr_set, attr_clr) of the recursive options; an access-time setting also clears the whole
    atime field, as mount_setattr(2) wants."""
    aset = aclr = 0
    for o in options or []:
        if o in REC_ATTRS:
            clear, f = REC_ATTRS[o]
            if clear:
                aclr |= f
            else:
                aset |= f
                if f & sc.MOUNT_ATTR__ATIME == f:
                    aclr |= sc.MOUNT_ATTR__ATIME
    return aset, aclr


def parse_options(options: list[str] | None) -> tuple[int, list[int], str]:
    """Split OCI mount options into (flags, propagation flags list, data string)."""
    flags, prop, data = 0, [], []   # type: tuple[int, list[int], list[str]]
    for o in options or []:
        if o in _FLAGS:
            clear, f = _FLAGS[o]
            flags = flags & ~f if clear else flags | f
        elif o in PROPAGATION:
            prop.append(PROPAGATION[o])
        elif o in _IGNORED:
            continue
        else:
            data.append(o)
    return flags, prop, ",".join(data)


def secure_join(root: str, unsafe: str, follow_final: bool = True) -> str:
    """Resolve `unsafe` as if `root` were /, following symlinks without leaving root (an absolute
    target restarts at root, `..` stops there), as chroot would. With follow_final=False a
    symlink in the last component is left as it is (for lstat-like uses)."""
    parts = [p for p in unsafe.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        cur = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode) and (parts or follow_final):
            hops += 1
            if hops > 40:
                raise InvalidArgument(f"path `{unsafe}`: too many levels of symbolic links")
            target = os.readlink(cur)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _mkdirs(path):
    os.makedirs(path, mode=0o755, exist_ok=True)


def _ensure_target(dest, is_dir):
    if os.path.lexists(dest):
        return
    if is_dir:
        _mkdirs(dest)
    else:
        _mkdirs(os.path.dirname(dest))
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


_LOCKED = {os.ST_NOSUID: sc.MS_NOSUID, os.ST_NODEV: sc.MS_NODEV, os.ST_NOEXEC: sc.MS_NOEXEC,
           os.ST_NOATIME: sc.MS_NOATIME, os.ST_NODIRATIME: sc.MS_NODIRATIME, os.ST_RELATIME: sc.MS_RELATIME}


def _locked_flags(path):
    """Flags of an existing mount that a remount in a user namespace must keep."""
    f = os.statvfs(path).f_flag
    out = 0
    for st_flag, ms in _LOCKED.items():
        if f & st_flag:
            out |= ms
    if f & os.ST_RDONLY:
        out |= sc.MS_RDONLY
    return out


# what runc lets a mount cover inside /proc (files lxcfs emulates); ketch.engine.mounts has the same list
VALID_PROC_MOUNTS = ("/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
                     "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev", "/proc/sys/kernel/ns_last_pid")


def check_proc_mount(rootfs: str, dest: str, mtype: str, shown: str) -> None:
    """runc's checkProcMount: nothing is mounted inside /proc (a bind over /proc/sys would
    hand the container the host's sysctls) but a few files, and only proc itself on /proc.
    `dest` is the resolved path, so a symlink into /proc does not get past."""
    inner = os.path.normpath("/" + os.path.relpath(dest, rootfs))
    if inner == "/proc":
        if mtype != "proc":
            raise InvalidArgument(f"mount `{shown}`: \"/proc\" cannot be mounted because it is not of type proc")
    elif inner.startswith("/proc/") and inner not in VALID_PROC_MOUNTS:
        raise InvalidArgument(f"mount `{shown}`: \"{inner}\" cannot be mounted because it is inside /proc")


def mount_one(rootfs: str, m: dict, *, userns: bool = False, cgroup_paths: dict | None = None,
              cgroupns: bool = False, late_ro: list | None = None, tree_fd: int | None = None) -> str:
    """Mount one `mounts` entry under rootfs; returns the mount point (resolved inside the root).

    As runc: a read-only tmpfs, or a read-only /dev, is mounted read-write and appended to
    late_ro, to be made read-only once the runtime has put /dev/pts, devices and links in it
    (finalize_ro, after pivot_root)."""
    mtype = m.get("type") or ""
    options = m.get("options") or []
    flags, prop, data = parse_options(options)
    is_bind = bool(flags & sc.MS_BIND) or mtype == "bind"
    if flags & sc.MS_RDONLY and not is_bind and late_ro is not None and (
            mtype == "tmpfs" or os.path.normpath(m["destination"]) == "/dev"):
        flags &= ~sc.MS_RDONLY
        late_ro.append((m["destination"], flags))
    src = m.get("source") or mtype or "none"
    dest = secure_join(rootfs, m["destination"])
    if dest == rootfs.rstrip("/") and m["destination"] != "/":
        raise InvalidArgument(f"mount `{m['destination']}`: resolves to the container root")
    check_proc_mount(rootfs, dest, mtype, m["destination"])
    if is_bind:
        flags |= sc.MS_BIND
        try:
            sst = os.stat(src)
        except FileNotFoundError:
            raise InvalidArgument(f"mount `{m['destination']}`: source `{src}` does not exist") from None
        _ensure_target(dest, stat.S_ISDIR(sst.st_mode))
        if tree_fd is not None:         # an idmapped copy of the source, made by idmapped_trees
            sc.move_mount_fd(tree_fd, dest)
            os.close(tree_fd)
        else:
            sc.mount(src, dest, None, flags & (sc.MS_BIND | sc.MS_REC), None)
        rest = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if rest:
            if userns:
                rest |= _locked_flags(dest) & ~sc.MS_RDONLY
            sc.mount(None, dest, None, sc.MS_BIND | sc.MS_REMOUNT | rest, None)
    elif mtype == "cgroup":
        _ensure_target(dest, True)
        _mount_cgroup(dest, flags, cgroup_paths or {}, cgroupns)
    elif mtype == "tmpfs":
        try:
            mode = os.stat(dest).st_mode
        except FileNotFoundError:
            mode = None
            _mkdirs(dest)
        if "tmpcopyup" in options:
            _tmpfs_copyup(src, dest, flags, data)
        else:
            sc.mount(src, dest, mtype, flags, data or None)
        if mode is not None:            # the tmpfs's root takes the directory's mode, as under runc
            os.chmod(dest, stat.S_IMODE(mode))
    else:
        _ensure_target(dest, True)
        try:
            sc.mount(src, dest, mtype, flags, data or None)
        except OSError as e:
            # mqueue/sysfs need the matching namespaces; fall back to a bind of the host's, as runc does
            if mtype == "sysfs" and e.errno in (errno.EPERM, errno.EBUSY):
                sc.mount("/sys", dest, None, sc.MS_BIND | sc.MS_REC, None)
                sc.mount(None, dest, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID
                         | sc.MS_NODEV | sc.MS_NOEXEC, None)
            elif mtype == "mqueue" and e.errno in (errno.EPERM, errno.EBUSY):
                sc.mount("/dev/mqueue", dest, None, sc.MS_BIND, None)
            else:
                raise
    for p in prop:
        sc.mount(None, dest, None, p, None)
    aset, aclr = rec_attrs(options)
    if aset or aclr:
        sc.mount_setattr(dest, aset, aclr, sc.AT_RECURSIVE)
    return dest


def idmap_of(m: dict, linux: dict) -> tuple[list, list] | None:
    """(uidMappings, gidMappings) an idmapped bind mount gets: the mount's own, else with `idmap` or
    `ridmap` the container's user namespace's; None for a mount that is not idmapped."""
    opts = m.get("options") or []
    uids, gids = m.get("uidMappings") or [], m.get("gidMappings") or []
    if not uids and not gids and not ({"idmap", "ridmap"} & set(opts)):
        return None
    if not uids and not gids:
        uids, gids = linux.get("uidMappings") or [], linux.get("gidMappings") or []
    if not uids or not gids:
        raise InvalidArgument(f"mount `{m['destination']}`: an idmapped mount needs uidMappings and gidMappings")
    if not (m.get("type") == "bind" or {"bind", "rbind"} & set(opts)):
        raise InvalidArgument(f"mount `{m['destination']}`: idmapped mounts are only supported for bind mounts")
    return uids, gids


def _userns_with(uids: list, gids: list) -> int:
    """An fd of a fresh user namespace with these mappings: a child makes it and waits while its
    maps are written (that needs the host's CAP_SETUID), then is killed; the fd keeps it alive."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(w, b"u")
            os.read(w, 1)               # never returns: waits to be killed
        finally:
            os._exit(0)
    os.close(w)
    try:
        if os.read(r, 1) != b"u":
            raise OSError(errno.EPERM, "idmapped mount: cannot make a user namespace")
        for name, maps in (("uid_map", uids), ("gid_map", gids)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write("".join(f"{x['containerID']} {x['hostID']} {x['size']}\n" for x in maps))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r)
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def idmapped_trees(cfg: dict) -> dict:
    """{index in mounts: mount fd} for the idmapped bind mounts: detached copies of their sources
    (open_tree) made idmapped (mount_setattr MOUNT_ATTR_IDMAP). Made in the host's user namespace
    (the kernel wants CAP_SYS_ADMIN over the source's superblock), before the container's is
    entered; the init attaches each where it belongs."""
    linux = cfg.get("linux") or {}
    out: dict = {}
    users: dict = {}
    for i, m in enumerate(cfg.get("mounts") or []):
        maps = idmap_of(m, linux)
        if maps is None:
            continue
        key = repr(maps)
        if key not in users:
            users[key] = _userns_with(*maps)
        opts = set(m.get("options") or [])
        rec = sc.AT_RECURSIVE if "rbind" in opts else 0
        fd = sc.open_tree(m.get("source") or "", sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | rec)
        try:
            flags = sc.AT_EMPTY_PATH | (sc.AT_RECURSIVE if "ridmap" in opts else 0)
            sc.mount_setattr("", sc.MOUNT_ATTR_IDMAP, 0, flags, dirfd=fd, userns_fd=users[key])
        except OSError as e:
            os.close(fd)
            raise OSError(e.errno, f"idmapped mount `{m['destination']}`: {e.strerror}") from None
        out[i] = fd
    for fd in users.values():
        os.close(fd)
    return out


def finalize_ro(late_ro: list) -> None:
    """After pivot_root: the read-only tmpfs and /dev mounts mount_one left writable."""
    for dest, flags in late_ro:
        sc.mount(None, dest, None, flags | sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | _locked_flags(dest), None)


def _tmpfs_copyup(src: str, dest: str, flags: int, data: str) -> None:
    """tmpcopyup: the image's content at dest copied into the fresh tmpfs that covers it (owners,
    modes, times, links, nodes). The directory is held open first, so it is read from under the
    tmpfs: no temporary mount point is needed."""
    under = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sc.mount(src, dest, "tmpfs", flags, data or None)
        _copy_tree(under, dest)
    finally:
        os.close(under)


def _copy_tree(src_fd: int, dest: str) -> None:
    for e in os.scandir(src_fd):
        st = e.stat(follow_symlinks=False)
        to = os.path.join(dest, e.name)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(to, 0o700)
            sub = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                _copy_tree(sub, to)
            finally:
                os.close(sub)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(e.name, dir_fd=src_fd), to)
        elif stat.S_ISREG(st.st_mode):
            fin = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                fout = os.open(to, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    left = st.st_size
                    while left > 0:
                        n = os.sendfile(fout, fin, None, min(left, 1 << 30))
                        if n == 0:
                            break
                        left -= n
                finally:
                    os.close(fout)
            finally:
                os.close(fin)
        else:
            os.mknod(to, st.st_mode, st.st_rdev)
        os.lchown(to, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(to, stat.S_IMODE(st.st_mode))
        os.utime(to, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _v1_hierarchies():
    """[(mountpoint, fstype, super options)] of the host's cgroup mounts."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, superopts = fields[sep + 1], fields[sep + 3]
            if fstype in ("cgroup", "cgroup2"):
                out.append((fields[4], fstype, superopts))
    return out


def _mount_cgroup(dest, flags, cgroup_paths, cgroupns):
    """Mount the container's view of its cgroups at dest (usually /sys/fs/cgroup)."""
    hier = _v1_hierarchies()
    if any(fst == "cgroup2" and mp == "/sys/fs/cgroup" for mp, fst, _ in hier):
        if cgroupns:
            sc.mount("cgroup2", dest, "cgroup2", flags, None)
        else:
            own = cgroup_paths.get("", "/")
            sc.mount("/sys/fs/cgroup" + own, dest, None, sc.MS_BIND | sc.MS_REC, None)
        return
    sc.mount("tmpfs", dest, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=755")
    for mp, fstype, superopts in hier:
        if not mp.startswith("/sys/fs/cgroup/") or fstype != "cgroup":
            continue
        name = mp[len("/sys/fs/cgroup/"):]
        sub = os.path.join(dest, name)
        _mkdirs(sub)
        opts = [o for o in superopts.split(",") if o not in ("rw", "ro")]
        if cgroupns:
            sc.mount("cgroup", sub, "cgroup", flags & ~sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                     ",".join(opts))
        else:
            own = cgroup_paths.get(name.split(",")[0], cgroup_paths.get("", "/"))
            sc.mount(mp + own, sub, None, sc.MS_BIND | sc.MS_REC, None)
        if flags & sc.MS_RDONLY:
            sc.mount(None, sub, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
                     | sc.MS_NOEXEC, None)
    if flags & sc.MS_RDONLY:
        sc.mount(None, dest, None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 "mode=755")


DEFAULT_DEVICES = [
    # path, type, major, minor, mode
    ("/dev/null", "c", 1, 3, 0o666),
    ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666),
    ("/dev/tty", "c", 5, 0, 0o666),
]
_DEVTYPE = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def needs_dev_setup(mounts: list[dict] | None) -> bool:
    """runc's needsSetupDev: the runtime makes /dev's devices and links unless /dev is a bind mount
    (then it is someone's real /dev, the host's say, and nothing in it is touched)."""
    for m in mounts or []:
        opts = m.get("options") or []
        if (m.get("type") == "bind" or "bind" in opts or "rbind" in opts) and \
                os.path.normpath(m.get("destination") or "") == "/dev":
            return False
    return True


def create_devices(rootfs: str, devices: list[dict] | None, *, userns: bool = False) -> None:
    """The default devices (unless linux.devices names the same path), then linux.devices, as runc
    makes them: anywhere in the root (resolved inside it), an existing entry left as it is; a fifo
    (`p`) is a fifo. In a user namespace, where mknod of a device is refused, a node is a bind mount
    of the host's, kept nosuid and noexec. Access is the device cgroup's business alone: a node
    made here is not thereby allowed."""
    wanted = {os.path.normpath(d["path"]): d for d in devices or [] if d.get("path")}
    todo: list[dict] = [{"path": p, "type": t, "major": ma, "minor": mi, "fileMode": mode, "uid": 0, "gid": 0}
                        for p, t, ma, mi, mode in DEFAULT_DEVICES if p not in wanted]
    todo += [d for p, d in wanted.items() if p != "/dev/ptmx"]      # ptmx is pts/ptmx, as runc
    old = os.umask(0)
    try:
        for d in todo:
            path = d["path"]
            kind = d.get("type", "c")
            if kind not in _DEVTYPE:
                raise InvalidArgument(f"{kind} is not a valid device type for device {path}")
            dest = secure_join(rootfs, path)
            _mkdirs(os.path.dirname(dest))
            if userns and kind != "p":
                _bind_device(path, dest)
                continue
            mode = d.get("fileMode", 0o666) & 0o7777
            try:
                os.mknod(dest, mode | _DEVTYPE[kind], os.makedev(d.get("major", 0) or 0, d.get("minor", 0) or 0))
            except FileExistsError:
                continue
            except PermissionError:
                _bind_device(path, dest)
                continue
            os.chown(dest, d.get("uid", 0) or 0, d.get("gid", 0) or 0)
    finally:
        os.umask(old)


def _bind_device(path: str, dest: str) -> None:
    _ensure_target(dest, False)
    sc.mount(path, dest, None, sc.MS_BIND, None)
    # the bind has the host mount's flags (devtmpfs: neither nosuid nor noexec); add both, and keep
    # the locked ones a user namespace may not clear
    sc.mount(None, dest, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_NOSUID | sc.MS_NOEXEC
             | (_locked_flags(dest) & ~sc.MS_RDONLY), None)


def default_symlinks(rootfs: str) -> None:
    links = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
             ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr")]
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "/dev/core"))
    for target, link in links:
        dest = secure_join(rootfs, link, follow_final=False)
        try:
            os.symlink(target, dest)
        except FileExistsError:
            pass
    ptmx = secure_join(rootfs, "/dev/ptmx", follow_final=False)
    if os.path.isdir(os.path.join(rootfs, "dev", "pts")):
        if os.path.lexists(ptmx):
            os.unlink(ptmx)
        os.symlink("pts/ptmx", ptmx)


def prepare_root(rootfs: str, propagation: str | None) -> None:
    """As runc's prepareRoot: `/` gets rootfsPropagation (rslave by default; recursive only when
    the spec says r...), then the mount holding the root is made private (slave when the spec asks
    for slave), so the root's bind joins no peer group: else every mount under it would reach the
    host (a failed create left them there), and pivot_root fails with EINVAL under a shared parent.
    mount(2) on a path that is no mount point fails with EINVAL: walk up until one answers."""
    flag = PROPAGATION.get(propagation or "", sc.MS_SLAVE | sc.MS_REC)
    sc.mount(None, "/", None, flag, None)
    parent_flag = sc.MS_SLAVE if flag & sc.MS_SLAVE else sc.MS_PRIVATE
    path = rootfs
    while True:
        try:
            sc.mount(None, path, None, parent_flag, None)
            break
        except OSError as e:
            if e.errno != errno.EINVAL or path == "/":
                raise
            path = os.path.dirname(path)
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC, None)


def root_propagation(propagation: str | None) -> None:
    """After pivot_root: shared or unbindable on the new `/` (private and slave are there already:
    the root's bind was made under a private or slave parent)."""
    flag = PROPAGATION.get(propagation or "", 0)
    if flag & (sc.MS_SHARED | sc.MS_UNBINDABLE):
        sc.mount(None, "/", None, flag, None)


def pivot(rootfs: str) -> None:
    """pivot_root into rootfs without a put_old directory (runc's trick: pivot onto '.')."""
    oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    newroot = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(newroot)
        sc.pivot_root(".", ".")
        os.fchdir(oldroot)
        # the old root is stacked on top of the new one; make it private then detach it
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(oldroot)
        os.close(newroot)


def move_root(rootfs: str) -> None:
    """--no-pivot: move the root mount over / and chroot (for ramfs roots)."""
    os.chdir(rootfs)
    sc.mount(rootfs, "/", None, sc.MS_MOVE, None)
    os.chroot(".")
    os.chdir("/")


def mask_paths(paths: list[str] | None) -> None:
    for p in paths or []:
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISDIR(st.st_mode):
            sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY, None)
        else:
            sc.mount("/dev/null", p, None, sc.MS_BIND, None)


def readonly_paths(paths: list[str] | None) -> None:
    for p in paths or []:
        try:
            sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC, None)
        except FileNotFoundError:
            continue
        flags = _locked_flags(p) | sc.MS_RDONLY
        sc.mount(None, p, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_REC | flags, None)


def remount_root_readonly() -> None:
    flags = _locked_flags("/") | sc.MS_RDONLY
    sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | flags, None)


def apply_sysctl(sysctl: dict[str, str] | None) -> None:
    for key, value in (sysctl or {}).items():
        if "/" in key or ".." in key or not key:
            raise InvalidArgument(f"sysctl `{key}`: invalid name")
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except FileNotFoundError:
            raise InvalidArgument(f"sysctl `{key}`: not supported by this kernel or namespace") from None
