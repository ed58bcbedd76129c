"""One mount model: every way a container gets a mount, parsed once at create into typed mounts.

    -v / HostConfig.Binds        SRC:DST[:MODE], NAME:DST[:MODE], DST (an anonymous volume)
    --mount / HostConfig.Mounts  type=bind|volume|tmpfs with their options
    --tmpfs / HostConfig.Tmpfs   {DST: "opts"}
    the image's VOLUME           anonymous volumes
    --volumes-from / VolumesFrom the bind and volume mounts of another container (`from_container`)

`parse` turns a HostConfig (and the image's volumes) into a list of `Mount`, checked with
Docker's messages, that is stored with the container (its notes) and used by everything after:
spec generation (`to_oci`), inspect's `Mounts` (`to_inspect`), `docker cp` (`host_paths`) and
validation. Volumes are a kind of their own: at create the engine resolves each one through the
volume service (a name made on first use, an anonymous one made with a random name) and keeps
the volume's name in `source` and its mount point in `path`. (After moby's volume/mounts parser:
one parser, typed mount points.)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ketch.errors import Internal, InvalidArgument, NotImplementedYet

BIND, VOLUME, TMPFS = "bind", "volume", "tmpfs"
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_VOLUME_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass
class Mount:
    type: str                      # bind | volume | tmpfs
    target: str                    # absolute path in the container
    source: str = ""               # bind: host path; volume: name ("" for an anonymous one)
    read_only: bool = False
    propagation: str = ""          # bind: as asked ("" is rprivate)
    recursive: bool = True         # bind: rbind unless bind-nonrecursive
    create_source: bool = False    # -v makes a missing host directory; --mount refuses it
    mode: str = ""                 # the -v mode string, shown as inspect's Mode
    tmpfs_options: list[str] = field(default_factory=list)  # size=, mode=, and --tmpfs's own words
    nocopy: bool = False           # volume: no copy-up from the image
    origin: str = "binds"          # binds | mounts | tmpfs | image | from (--volumes-from)
    labels: dict = field(default_factory=dict)
    driver_options: dict = field(default_factory=dict)
    path: str = ""                 # volume: its mount point on the host (set at create)
    copied: bool = False           # volume: the copy-up from the image was done (first start)
    anonymous: bool = False        # volume: made for this container (rm -v and --rm remove it)

    # --- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Mount:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    # --- views -----------------------------------------------------------------------
    def describe(self) -> str:
        """How the user wrote it, for error messages."""
        if self.origin == "image":
            return f"the image's VOLUME {self.target}"
        if self.origin == "mounts":
            return f"--mount type={self.type},target={self.target}"
        if self.origin == "tmpfs":
            return f"--tmpfs {self.target}"
        if self.origin == "from":
            return f"--volumes-from {self.target}"
        return f"-v {self.source + ':' if self.source else ''}{self.target}{':' + self.mode if self.mode else ''}"

    def to_inspect(self) -> dict:
        """One item of inspect's Mounts, in Docker's shape."""
        if self.type == BIND:
            return {"Type": BIND, "Source": self.source, "Destination": self.target, "Mode": self.mode,
                    "RW": not self.read_only, "Propagation": self.propagation or "rprivate"}
        if self.type == VOLUME:
            mode = self.mode or ("z" if self.origin == "binds" and not self.anonymous else "")
            return {"Type": VOLUME, "Name": self.source, "Source": self.path, "Destination": self.target,
                    "Driver": "local", "Mode": mode, "RW": not self.read_only, "Propagation": ""}
        return {"Type": TMPFS, "Source": "", "Destination": self.target, "Mode": "", "RW": not self.read_only,
                "Propagation": ""}

    def to_oci(self) -> dict:
        """The OCI runtime-spec mount."""
        if self.type == BIND:
            opts = ["rbind" if self.recursive else "bind"]
            if self.read_only:
                opts.append("ro")
            elif "rw" in self.mode.split(","):
                opts.append("rw")
            if self.propagation:
                opts.append(self.propagation)
            return {"destination": self.target, "type": "bind", "source": self.source, "options": opts}
        if self.type == TMPFS:
            opts = ["nosuid", "nodev", "noexec"] + list(self.tmpfs_options)
            if self.read_only and "ro" not in opts:
                opts.append("ro")
            return {"destination": self.target, "type": "tmpfs", "source": "tmpfs", "options": opts}
        if not self.path:
            raise Internal(f"{self.describe()}: the volume was not resolved at create")
        return {"destination": self.target, "type": "bind", "source": self.path,
                "options": ["rbind", "rprivate", "ro" if self.read_only else "rw"]}


# --- parsers ----------------------------------------------------------------------------

def _absolute_target(target: str, spec: str) -> str:
    if not target or not target.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mount config: "
                              "mount path must be absolute")
    if os.path.normpath(target) == "/":
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mount config: "
                              "destination can't be '/'")
    return os.path.normpath(target)


def parse_bind(spec: str) -> Mount:
    """One `-v` / HostConfig.Binds entry."""
    if not isinstance(spec, str) or not spec:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    parts = spec.split(":")
    if len(parts) == 1:  # -v /data: an anonymous volume
        return Mount(VOLUME, _absolute_target(parts[0], spec), origin="binds")
    if len(parts) > 3:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else ""
    if not src:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    dst = _absolute_target(dst, spec)
    kind = BIND if src.startswith("/") else VOLUME
    if kind == VOLUME and not (set(src) <= _VOLUME_NAME_CHARS and src[0].isalnum()):
        raise InvalidArgument(f"invalid volume specification: '{spec}': \"{src}\" includes invalid characters "
                              "for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. "
                              "If you intended to pass a host directory, use absolute path")
    m = Mount(kind, dst, os.path.normpath(src) if kind == BIND else src, mode=mode, origin="binds",
              create_source=kind == BIND)
    seen_rw = seen_prop = False
    for word in [w for w in mode.split(",") if w]:
        if word in ("ro", "rw"):
            if seen_rw:
                raise InvalidArgument(f"invalid mode: {mode}")
            seen_rw = True
            m.read_only = word == "ro"
        elif word in ("z", "Z"):
            pass  # SELinux relabelling: no SELinux on this host, as Docker on such hosts
        elif word in PROPAGATIONS:
            if kind != BIND or seen_prop:
                raise InvalidArgument(f"invalid mode: {mode}")
            seen_prop = True
            m.propagation = word
        elif word == "nocopy" and kind == VOLUME:
            m.nocopy = True
        else:
            raise InvalidArgument(f"invalid mode: {mode}")
    return m


def parse_api_mount(raw: object) -> Mount:
    """One `--mount` / HostConfig.Mounts entry."""
    if not isinstance(raw, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Mounts "
                              "of type mount.Mount")
    kind = raw.get("Type")
    target = raw.get("Target") or ""
    where = f"invalid mount config for type \"{kind}\""
    if kind not in (BIND, VOLUME, TMPFS):
        if kind in ("npipe", "cluster"):
            raise NotImplementedYet(f"{where}: mount type \"{kind}\" is not supported on this platform")
        raise InvalidArgument(f"{where}: mount type unknown")
    if not isinstance(target, str) or not target.startswith("/"):
        raise InvalidArgument(f"{where}: invalid mount path: '{target}' mount path must be absolute")
    if os.path.normpath(target) == "/":
        raise InvalidArgument(f"{where}: invalid specification: destination can't be '/'")
    target = os.path.normpath(target)
    ro = bool(raw.get("ReadOnly"))
    src = raw.get("Source") or ""
    if not isinstance(src, str):
        raise InvalidArgument(f"{where}: Source must be a string")
    bind_opts, vol_opts, tmpfs_opts = (raw.get("BindOptions"), raw.get("VolumeOptions"), raw.get("TmpfsOptions"))
    for name, opts, owner in (("BindOptions", bind_opts, BIND), ("VolumeOptions", vol_opts, VOLUME),
                              ("TmpfsOptions", tmpfs_opts, TMPFS)):
        if opts is not None and not isinstance(opts, dict):
            raise InvalidArgument(f"{where}: {name} must be an object")
        if opts and kind != owner:
            raise InvalidArgument(f"{where}: {name} must not be specified")
    if kind == BIND:
        if not src:
            raise InvalidArgument(f"{where}: field Source must not be empty")
        if not src.startswith("/"):
            raise InvalidArgument(f"{where}: invalid mount path: '{src}' mount path must be absolute")
        if not os.path.exists(src):
            raise InvalidArgument(f"{where}: bind source path does not exist: {src}")
        b = bind_opts or {}
        prop = b.get("Propagation") or ""
        if prop and prop not in PROPAGATIONS:
            raise InvalidArgument(f"{where}: invalid propagation mode: {prop}")
        return Mount(BIND, target, os.path.normpath(src), read_only=ro, propagation=prop,
                     recursive=not b.get("NonRecursive"), origin="mounts")
    if kind == TMPFS:
        if src:
            raise InvalidArgument(f"{where}: Source must not be specified")
        t = tmpfs_opts or {}
        opts = []
        size, mode = t.get("SizeBytes"), t.get("Mode")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(f"{where}: invalid tmpfs size: {size}")
            if size:
                opts.append(f"size={size}")
        if mode is not None:
            if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
                raise InvalidArgument(f"{where}: invalid tmpfs mode: {mode}")
            if mode:
                opts.append(f"mode={mode:o}")
        return Mount(TMPFS, target, read_only=ro, tmpfs_options=opts, origin="mounts")
    v = vol_opts or {}
    driver = (v.get("DriverConfig") or {}).get("Name") or "local"
    if driver != "local":
        raise InvalidArgument(f"{where}: volume driver \"{driver}\" is not available (only local is)")
    return Mount(VOLUME, target, src, read_only=ro, nocopy=bool(v.get("NoCopy")), origin="mounts",
                 labels=dict(v.get("Labels") or {}),
                 driver_options=dict((v.get("DriverConfig") or {}).get("Options") or {}))


def parse_tmpfs(target: str, options: object) -> Mount:
    """One HostConfig.Tmpfs entry (`--tmpfs /run:rw,size=64m`)."""
    if not isinstance(options, str):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Tmpfs "
                              "of type string")
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid tmpfs target: {target}: mount path must be absolute")
    if os.path.normpath(target) == "/":
        raise InvalidArgument(f"invalid tmpfs target: {target}: destination can't be '/'")
    words = [w for w in options.split(",") if w]
    ro = "ro" in words
    return Mount(TMPFS, os.path.normpath(target), read_only=ro, origin="tmpfs",
                 tmpfs_options=[w for w in words if w not in ("ro", "rw")])


# what runc lets a mount cover inside /proc (files lxcfs emulates); the runtime checks it again on
# the resolved path (a symlink in the image), this is the same rule at create, as a 400
VALID_PROC_MOUNTS = ("/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
                     "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev", "/proc/sys/kernel/ns_last_pid")


def _check_proc(m: Mount) -> None:
    if m.target == "/proc" or (m.target.startswith("/proc/") and m.target not in VALID_PROC_MOUNTS):
        why = "is not of type proc" if m.target == "/proc" else "is inside /proc"
        raise InvalidArgument(f"error mounting \"{m.source or m.type}\" to rootfs at \"{m.target}\": "
                              f"\"{m.target}\" cannot be mounted because it {why}")


def parse(host_config: dict, image_volumes: dict | None = None, user_volumes: object = None) -> list[Mount]:
    """Every mount of a container, in the order the runtime mounts them; duplicates refused.

    `user_volumes` is the create body's Config.Volumes: the docker CLI sends `-v /data` there,
    not in Binds (an anonymous volume); `image_volumes` is the image config's VOLUME set."""
    if user_volumes is not None and not isinstance(user_volumes, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field ContainerConfigWrapper.Volumes "
                              "of type map[string]struct {}")
    binds = host_config.get("Binds") or []
    api_mounts = host_config.get("Mounts") or []
    tmpfs = host_config.get("Tmpfs") or {}
    if not isinstance(binds, list):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Binds of type []string")
    if not isinstance(api_mounts, list):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Mounts "
                              "of type []mount.Mount")
    if not isinstance(tmpfs, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Tmpfs "
                              "of type map[string]string")
    out: list[Mount] = []
    out += [parse_tmpfs(t, o) for t, o in tmpfs.items()]
    out += [parse_bind(b) for b in binds]
    out += [parse_api_mount(m) for m in api_mounts]
    seen: dict[str, Mount] = {}
    for m in out:
        _check_proc(m)
        if m.target in seen:
            raise InvalidArgument(f"Duplicate mount point: {m.target}")
        seen[m.target] = m
    for target in sorted(user_volumes or {}):
        path = os.path.normpath(_absolute_target(target, target))
        if path not in seen:
            seen[path] = Mount(VOLUME, path, origin="binds")
            out.append(seen[path])
    for target in sorted(image_volumes or {}):
        if isinstance(target, str) and target.startswith("/") and os.path.normpath(target) not in seen:
            out.append(Mount(VOLUME, os.path.normpath(target), origin="image"))
    return out


def from_notes(items: list[dict] | None) -> list[Mount]:
    return [Mount.from_dict(d) for d in items or []]


def oci_mounts(mounts: list[Mount]) -> list[dict]:
    """The runtime-spec mounts, a parent before what is mounted inside it (as moby sorts them)."""
    return [m.to_oci() for m in sorted(mounts, key=lambda m: m.target.rstrip("/").count("/"))]


def parse_volumes_from(spec: object) -> tuple[str, str]:
    """One --volumes-from / HostConfig.VolumesFrom entry: (container, "" | "ro" | "rw")."""
    if not isinstance(spec, str) or not spec:
        raise InvalidArgument(f"invalid volumes-from specification: '{spec}'")
    ref, _, mode = spec.partition(":")
    if not ref or mode not in ("", "ro", "rw", "z", "Z", "ro,z", "rw,z", "ro,Z", "rw,Z"):
        raise InvalidArgument(f"invalid mode: {mode}" if ref else f"invalid volumes-from specification: '{spec}'")
    return ref, mode.split(",")[0] if mode.split(",")[0] in ("ro", "rw") else ""


def from_container(others: list[Mount], mode: str, taken: set[str]) -> list[Mount]:
    """The bind and volume mounts of another container, for --volumes-from (tmpfs are its own);
    `mode` ro/rw overrides theirs; a target this container mounts itself is left to its own."""
    out = []
    for o in others:
        if o.type == TMPFS or o.target in taken:
            continue
        m = Mount.from_dict(o.to_dict())
        m.origin, m.create_source, m.copied = "from", False, True   # its data is the other's, already there
        if mode:
            m.read_only = mode == "ro"
        out.append(m)
    return out


def _mount_of(path: str) -> tuple[str, set[str]]:
    """The mount point holding `path` and its propagation words ("shared", "master")."""
    best, words = "/", set()
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].replace("\\040", " ")
            if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, words = mp, {w.split(":")[0] for w in fields[6:fields.index("-")]}
    return best, words


def root_propagation(mounts: list[Mount]) -> str | None:
    """The rootfsPropagation a shared bind needs (the root shared), with its source checked to sit
    on a shared mount, as moby checks it (else nothing could ever propagate). A slave bind needs
    nothing more than the runtime's default root (rslave); of a private source it receives
    nothing, which moby refuses and Ketch lets run."""
    want = None
    for m in mounts:
        if m.type != BIND or m.propagation not in ("shared", "rshared"):
            continue
        mp, words = _mount_of(m.source)
        if "shared" not in words:
            raise InvalidArgument(f"path {m.source} is mounted on {mp} but it is not a shared mount")
        want = "shared"
    return want


def host_paths(mounts: list[Mount]) -> dict[str, str]:
    """Container path -> host path of each bind and volume mount, for `docker cp`."""
    return {m.target: m.source if m.type == BIND else m.path for m in mounts
            if m.type == BIND or (m.type == VOLUME and m.path)}


def prepare_sources(mounts: list[Mount]) -> None:
    """Make the missing host directories of `-v` binds, as Docker does (at create)."""
    for m in mounts:
        if m.type == BIND and m.create_source and not os.path.exists(m.source):
            os.makedirs(m.source, exist_ok=True)
