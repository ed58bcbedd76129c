"""cgroup drivers of the OCI runtime: v1 (cgroupfs hierarchies) and v2 (unified).

The runtime core talks to one ``Manager`` per container::

    m = new_manager(spec["linux"].get("cgroupsPath"), cid, systemd=opts.systemd_cgroup)
    m.create(); m.set(spec["linux"].get("resources") or {}); m.apply(init_pid)
    state["cgroup"] = m.to_dict()          # later: load_manager(state["cgroup"])

Paths follow the OCI runtime spec and runc: an absolute ``cgroupsPath`` is relative to
each hierarchy's root, a relative one to the runtime process's own cgroup, an empty one
becomes ``/ketch/<id>``. With ``systemd=True`` the path is ``slice:prefix:name`` (runc's
``--systemd-cgroup``); there is no systemd to ask here, so it is mapped to the cgroupfs
path systemd would use (``a-b.slice`` => ``a.slice/a-b.slice/<prefix>-<name>.scope``)
and the cgroupfs driver does the work.

This module stays import-lean (the runtime CLI starts with ``python3 -I -S``): the
drivers live in v1.py and v2.py and are imported when a manager is made.
"""

import _signal as signal
import _thread
import os

from ketch import _json as json

DEFAULT_ROOT = "/sys/fs/cgroup"
DEFAULT_PARENT = "/ketch"
DEFAULT_SYSTEMD_SLICE = "system.slice"
DEFAULT_SYSTEMD_PREFIX = "ketch"


def warn(message):
    """A warning in the runtime's log (stderr, or --log): something the spec asked for that this
    host cannot do."""
    from ketch.runtime import log
    log.warn(message)


# --- /proc/self/mountinfo and /proc/self/cgroup ----------------------------------------

def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text):
    """The cgroup and cgroup2 mounts in mountinfo ``text``, in order.

    Each is a dict: mountpoint, root (the cgroup the mount shows as its top),
    fstype, controllers (v1: the subsystems from the super options, with ``name=X``
    for named hierarchies; v2: empty).
    """
    mounts = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype = tail[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        controllers = []
        if fstype == "cgroup":
            for opt in tail[2].split(","):
                if opt in ("rw", "ro") or opt.startswith(("release_agent=", "clone_children", "noprefix", "xattr",
                                                          "cpuset_v2_mode", "favordynmods")):
                    continue
                controllers.append(opt)
        mounts.append({
            "mountpoint": _unescape(fields[4]),
            "root": _unescape(fields[3]),
            "fstype": fstype,
            "controllers": controllers,
        })
    return mounts


def cgroup_mounts(mountinfo="/proc/self/mountinfo"):
    with open(mountinfo) as f:
        return parse_mountinfo(f.read())


def parse_proc_cgroup(text):
    """``/proc/PID/cgroup`` as {controller: path}; the v2 entry is under ``""``.

    A comounted line ``4:cpu,cpuacct:/x`` gives both cpu and cpuacct.
    """
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
            continue
        for c in ctrls.split(","):
            out[c] = path
    return out


def own_cgroups(pid="self"):
    with open("/proc/%s/cgroup" % pid) as f:
        return parse_proc_cgroup(f.read())


def detect(root=DEFAULT_ROOT, mountinfo="/proc/self/mountinfo"):
    """"v2" if ``root`` itself is a cgroup2 mount (unified mode), else "v1".

    A hybrid host (tmpfs at root, v1 hierarchies below, cgroup2 at root/unified) is v1.
    """
    root = os.path.realpath(root)
    kind = None
    try:
        mounts = cgroup_mounts(mountinfo)
    except OSError:
        mounts = []
    for m in mounts:
        if m["mountpoint"] == root:
            kind = m["fstype"]          # the last mount on a mountpoint is the visible one
    return "v2" if kind == "cgroup2" else "v1"


def own_procs_files(proc_cgroup, root=DEFAULT_ROOT):
    """The cgroup.procs files of the cgroups ``/proc/self/cgroup`` text says the process is in,
    the v2 one first (at root/unified on a hybrid host, at root on a unified one)."""
    out, v1 = [], []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        rel = parts[2].rstrip("/")
        ctrl = parts[1].split(",")[0].removeprefix("name=")
        if ctrl:
            v1.append(f"{root}/{ctrl}{rel}/cgroup.procs")
        else:
            out += [f"{root}/unified{rel}/cgroup.procs", f"{root}{rel}/cgroup.procs"]
    return out + v1


def prime_migration(root=DEFAULT_ROOT):
    """Start, on a thread of its own, the wait the host's next cgroup migration would make.

    Moving a process between cgroups takes the kernel's cgroup_threadgroup_rwsem for writing,
    and the first writer after a quiet spell waits for an RCU grace period (5-15 ms measured
    here) before the move; writers for about a grace period after it do not wait (unless the
    hierarchy is mounted with ``favordynmods``); a mkdir of a cgroup waits as well, for the
    writer holds cgroup_mutex while it waits. So create and exec begin with a move of the
    runtime into the cgroup it is already in (writing 0 to its own cgroup.procs, a no-op),
    while the main thread reads the bundle: the container's own move later finds the wait
    done. Best effort: a host where this fails (not root, no cgroupfs) just waits later.
    """
    def run():
        try:
            with open("/proc/self/cgroup") as f:
                candidates = own_procs_files(f.read(), root)
        except OSError:
            return
        for p in candidates:
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.write(fd, b"0")
            except OSError:
                pass
            finally:
                os.close(fd)
            return
    _thread.start_new_thread(run, ())


# --- path resolution ------------------------------------------------------------------

def clean_path(path):
    """runc's CleanPath: no ``..`` may climb above the start; keeps absolute vs relative."""
    if not path:
        return ""
    absolute = path.startswith("/")
    cleaned = os.path.normpath("/" + path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if absolute:
        return cleaned
    return cleaned.lstrip("/")


def expand_slice(slice_name):
    """systemd's slice expansion: ``a-b-c.slice`` => ``/a.slice/a-b.slice/a-b-c.slice``.

    ``-.slice`` is the root slice (``/``). Invalid names raise InvalidArgument, as
    in runc's ExpandSlice.
    """
    from ketch.errors import InvalidArgument
    suffix = ".slice"
    if not slice_name.endswith(suffix) or len(slice_name) <= len(suffix) or "/" in slice_name:
        raise InvalidArgument("invalid systemd slice `%s`: must be a name ending in .slice" % slice_name)
    if slice_name == "-.slice":
        return "/"
    base = slice_name[:-len(suffix)]
    path, prefix = "", ""
    for component in base.split("-"):
        if component == "":
            raise InvalidArgument("invalid systemd slice `%s`: empty component" % slice_name)
        path += "/" + prefix + component + suffix
        prefix += component + "-"
    return path


def systemd_path(cgroups_path, container_id):
    """The cgroupfs path systemd would give ``slice:prefix:name`` (runc rules).

    Returns (path, unit name). An empty path means ``system.slice:ketch:<id>``; an
    empty slice means system.slice; a name ending in .slice is itself a slice.
    """
    from ketch.errors import InvalidArgument
    if not cgroups_path:
        slice_name, prefix, name = DEFAULT_SYSTEMD_SLICE, DEFAULT_SYSTEMD_PREFIX, container_id
    else:
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise InvalidArgument(
                "invalid cgroupsPath `%s`: expected \"slice:prefix:name\" for systemd cgroups" % cgroups_path)
        slice_name, prefix, name = parts
        slice_name = slice_name or DEFAULT_SYSTEMD_SLICE
        if not name:
            raise InvalidArgument("invalid cgroupsPath `%s`: empty unit name" % cgroups_path)
    if "/" in name or "/" in prefix or name in (".", ".."):
        raise InvalidArgument("invalid cgroupsPath `%s`: unit name must not contain /" % cgroups_path)
    if name.endswith(".slice"):
        unit = name         # a name ending in .slice asks for a slice, not a scope (runc)
    else:
        unit = "%s-%s.scope" % (prefix, name) if prefix else "%s.scope" % name
    path = expand_slice(slice_name).rstrip("/") + "/" + unit
    return path, unit


def logical_path(cgroups_path, container_id, systemd=False):
    """The cgroup path as the spec means it: absolute ("/a/b") or relative ("a/b")."""
    if systemd:
        return systemd_path(cgroups_path, container_id)[0]
    if not cgroups_path:
        return DEFAULT_PARENT + "/" + container_id
    return clean_path(cgroups_path)


def resolve_dir(mountpoint, mount_root, logical, own=None):
    """The directory of ``logical`` in a hierarchy mounted at ``mountpoint``.

    ``mount_root`` is the cgroup the mount shows at its top (mountinfo field 4).
    Absolute paths are taken from the hierarchy's root; relative ones from ``own``
    (this process's cgroup in that hierarchy, as /proc/self/cgroup says).
    """
    if logical.startswith("/"):
        full = logical
    else:
        full = os.path.normpath(os.path.join(own or "/", logical))
    # a mount of a sub-cgroup (bind mounts, cgroupns): strip its root when it is a prefix
    if mount_root not in ("", "/") and (full == mount_root or full.startswith(mount_root.rstrip("/") + "/")):
        full = full[len(mount_root.rstrip("/")):] or "/"
    return os.path.normpath(mountpoint + "/" + full.lstrip("/")).rstrip("/") or "/"


# --- the manager ----------------------------------------------------------------------

class Manager:
    """One container's cgroup; see v1.V1Manager and v2.V2Manager."""

    version = ""

    def __init__(self, path, root=DEFAULT_ROOT, systemd=False, unit=None):
        self.path = path            # the resolved cgroup path from the hierarchy root ("/ketch/id")
        self.root = root
        self.systemd = systemd
        self.unit = unit

    def to_dict(self):
        raise NotImplementedError

    def create(self):
        raise NotImplementedError

    def apply(self, pid):
        """Move pid into the cgroup, which create() has made."""
        raise NotImplementedError

    def set(self, resources):
        raise NotImplementedError

    def update(self, resources):
        """``runc update``: the same as set() on a live cgroup."""
        self.set(resources)

    def freeze(self):
        raise NotImplementedError

    def thaw(self):
        raise NotImplementedError

    def frozen(self):
        raise NotImplementedError

    def pids(self):
        raise NotImplementedError

    def stats(self):
        raise NotImplementedError

    def oom_killed(self):
        raise NotImplementedError

    def destroy(self):
        raise NotImplementedError

    def exists(self):
        raise NotImplementedError

    def kill_all(self, sig=signal.SIGKILL):
        """Send ``sig`` to every process in the cgroup (for ``kill --all`` and delete).

        Freeze first so nothing forks between reading cgroup.procs and the kill, then
        thaw so SIGKILL is delivered (as runc's signalAllProcesses).
        """
        try:
            self.freeze()
            froze = True
        except Exception:
            froze = False
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if froze:
                self.thaw()

    def __repr__(self):
        return "<%s %s %s>" % (type(self).__name__, self.version, self.path)


def new_manager(cgroups_path, container_id, *, systemd=False, root=DEFAULT_ROOT, version=None,
                mountinfo="/proc/self/mountinfo"):
    """A manager for the container's cgroup (nothing is created until create())."""
    version = version or detect(root, mountinfo)
    unit = None
    if systemd:
        logical, unit = systemd_path(cgroups_path, container_id)
    else:
        logical = logical_path(cgroups_path, container_id)
    if version == "v2":
        from ketch.runtime.cgroups.v2 import V2Manager
        return V2Manager.new(logical, root=root, systemd=systemd, unit=unit)
    if version == "v1":
        from ketch.runtime.cgroups.v1 import V1Manager
        return V1Manager.new(logical, root=root, systemd=systemd, unit=unit, mountinfo=mountinfo)
    from ketch.errors import InvalidArgument
    raise InvalidArgument("unknown cgroup version `%s`" % version)


def load_manager(data):
    """The manager saved by Manager.to_dict() (in the runtime's state.json)."""
    if isinstance(data, str):
        data = json.loads(data)
    version = data.get("version")
    if version == "v2":
        from ketch.runtime.cgroups.v2 import V2Manager
        return V2Manager.from_dict(data)
    if version == "v1":
        from ketch.runtime.cgroups.v1 import V1Manager
        return V1Manager.from_dict(data)
    from ketch.errors import InvalidArgument
    raise InvalidArgument("load cgroup manager: unknown version `%s`" % version)


def errno_text(e):
    """``EBUSY``-style text for an OSError, for messages."""
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno).lower()
    return str(e)
