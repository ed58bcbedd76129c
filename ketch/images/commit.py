"""A container's writable layer made visible: ``diff`` (what it changed), ``commit`` (those changes as
a new image on top of the container's image) and the run config a commit gives its image.

    container_changes(svc, key, placeholders=()) -> [{"Path": "/x", "Kind": 0|1|2}]
    commit_run_config(container_config, body_config, changes) -> the new image's "config"
    commit_container(svc, key, run_config=, author=, comment=, created_by=, ref=None, placeholders=()) -> image ID

The commit path, which every build step uses too: the container's snapshot's upper dir is walked
once (ketch.archive.upper.write_upper) and each changed entry goes both into a content-store
writer (the layer blob: an uncompressed tar, so its digest is its diffID, hashed once) and into a
fresh parentless snapshot, which is then committed on the image's top ChainID, exactly as a
parallel pull commits a layer it unpacked (docs/storage.md). Nothing of the lower layers is read
or copied, so a commit costs what the container changed, not what the image holds. The image is
the container's image's manifest plus that one layer (an OCI manifest; Docker layer media types
become their OCI names), its config the parent's with the new run config, diffID and history
entry; it is registered like a pulled image and is pushable and saveable as any other. A
container that changed nothing gives an image with no new layer (``empty_layer`` in its
history, as Docker records it).

Changes (``-c``) are Dockerfile instructions, as dockerd's BuildFromConfig takes them: CMD,
ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR; any other is refused by name
before anything is paused or written.
"""

from __future__ import annotations

import json
import os
import posixpath
import time

from ketch.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ketch.oci import digest as dg
from ketch.oci import image as oci
from ketch.oci import mediatypes as mt
from ketch.oci import reference

COMMIT_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR")
# the keys of a container's Config that an image's config carries (the rest is the container's own)
IMAGE_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
                     "OnBuild", "StopSignal", "Healthcheck", "ArgsEscaped", "Shell")
_OCI_LAYER_TYPE = {mt.DOCKER_LAYER: mt.OCI_LAYER, mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP,
                   mt.DOCKER_LAYER_ZSTD: mt.OCI_LAYER_ZSTD, mt.DOCKER_LAYER_FOREIGN: mt.OCI_LAYER_NONDIST_GZIP}


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


def _container_root(svc, key):
    """(snapshot stat, upper dir, lower dirs) of container ``key``; FailedPrecondition if its root is gone."""
    from ketch.snapshots import ACTIVE
    try:
        st = svc.snapshots.stat(key)
    except NotFound:
        raise FailedPrecondition(f"container {key}: its root filesystem is gone") from None
    if st["kind"] != ACTIVE:
        raise FailedPrecondition(f"container {key}: snapshot is {st['kind']}, not a container root")
    upper = svc.snapshots.upper_dir(key)
    if not os.path.isdir(upper):
        raise FailedPrecondition(f"container {key}: its writable layer {upper} is gone")
    return st, upper, svc.snapshots.lower_dirs(key)


def _move_upper(upper: str, dest: str) -> str:
    """Move upper dir ``upper`` onto ``dest`` (a snapshot's fresh, empty upper dir, whose mode and
    owner the moved root takes; overlay's xattrs on the root go), leaving ``upper`` empty."""
    st = os.stat(dest)
    os.rmdir(dest)
    os.rename(upper, dest)
    os.mkdir(upper, 0o755)
    os.chown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, st.st_mode & 0o7777)
    for name in os.listxattr(dest, follow_symlinks=False):
        if name.startswith("trusted.overlay."):
            os.removexattr(dest, name, follow_symlinks=False)
    return dest


def container_changes(svc, key: str, placeholders=()) -> list[dict]:
    """Docker's /containers/{id}/changes: [{"Path", "Kind"}] (0 modified, 1 added, 2 deleted)."""
    from ketch.snapshots.changes import changes
    from ketch.snapshots.changes import placeholders as find_placeholders
    _, upper, lowers = _container_root(svc, key)
    skip = find_placeholders(upper, lowers, placeholders)
    return [{"Path": p, "Kind": k} for p, k in changes(upper, lowers, skip)]


# --- the run config ------------------------------------------------------------------------------

def commit_run_config(container_config: dict, body_config: dict | None, changes) -> dict:
    """The new image's run config, as dockerd makes it: the request's config (or else the
    container's), the changes applied to it, then what it leaves empty taken from the container's
    (moby's merge); only the keys an image config has. A bad change is InvalidArgument."""
    base = body_config if body_config else container_config
    cfg = {k: _copy(base.get(k)) for k in IMAGE_CONFIG_KEYS if base.get(k) is not None}
    cfg = apply_changes(cfg, changes)
    _merge(cfg, container_config or {})
    return {k: cfg[k] for k in IMAGE_CONFIG_KEYS if k in cfg}


def _copy(v):
    return json.loads(json.dumps(v))


def _merge(user: dict, image: dict) -> None:
    """moby's daemon/commit.go merge(userConf, imageConf): fill what the user's config leaves empty."""
    for k in ("User", "WorkingDir", "StopSignal", "OnBuild", "Healthcheck"):
        if not user.get(k) and image.get(k):
            user[k] = image[k]
    for k in ("ExposedPorts", "Labels", "Volumes"):
        if image.get(k):
            user[k] = {**image[k], **(user.get(k) or {})}
    if image.get("Env"):
        keys = {e.split("=", 1)[0] for e in user.get("Env") or []}
        user["Env"] = list(user.get("Env") or []) + [e for e in image["Env"] if e.split("=", 1)[0] not in keys]
    if not user.get("Entrypoint"):
        if not user.get("Cmd") and image.get("Cmd") is not None:
            user["Cmd"] = image["Cmd"]
        if user.get("Entrypoint") is None and image.get("Entrypoint") is not None:
            user["Entrypoint"] = image["Entrypoint"]


def _lines(changes) -> list[str]:
    """Each change may hold several lines (dockerd joins them as one Dockerfile); `\\` continues a line."""
    out: list[str] = []
    for change in changes or ():
        if not isinstance(change, str):
            raise InvalidArgument(f"change {change!r}: must be a string")
        cur = ""
        for raw in change.splitlines():
            line = raw.rstrip()
            if not cur and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                cur += line[:-1]
                continue
            out.append((cur + line).strip())
            cur = ""
        if cur.strip():
            out.append(cur.strip())
    return out


def apply_changes(cfg: dict, changes) -> dict:
    """Dockerfile instructions (COMMIT_INSTRUCTIONS) applied to run config ``cfg`` (a copy is returned)."""
    cfg = _copy(cfg)
    cmd_set = False
    for line in _lines(changes):
        word, _, rest = line.partition(" ")
        if "\t" in word:
            word, _, more = word.partition("\t")
            rest = more + " " + rest
        instr, rest = word.upper(), rest.strip()
        if instr not in COMMIT_INSTRUCTIONS:
            raise InvalidArgument(f"{word.lower()} is not a valid change command (commit takes "
                                  f"{', '.join(COMMIT_INSTRUCTIONS)})")
        if not rest:
            raise InvalidArgument(f"{instr} requires at least one argument")
        env = _env_map(cfg.get("Env") or [])
        if instr in ("CMD", "ENTRYPOINT"):
            form = _json_array(rest, instr)
            if form is None:
                form = list(cfg.get("Shell") or ["/bin/sh", "-c"]) + [rest]
            if instr == "CMD":
                cfg["Cmd"], cmd_set = form, True
            else:
                cfg["Entrypoint"] = form
                if not cmd_set:
                    cfg["Cmd"] = None  # an ENTRYPOINT drops the CMD set before it (Dockerfile rules)
        elif instr in ("ENV", "LABEL"):
            pairs = _pairs(rest, instr, env)
            if instr == "ENV":
                cur = list(cfg.get("Env") or [])
                for k, v in pairs:
                    cur = [e for e in cur if e.split("=", 1)[0] != k] + [f"{k}={v}"]
                cfg["Env"] = cur
            else:
                labels = dict(cfg.get("Labels") or {})
                labels.update(pairs)
                cfg["Labels"] = labels
        elif instr == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for w in _words(rest, env):
                for p in _ports(w):
                    ports[p] = {}
            cfg["ExposedPorts"] = ports
        elif instr == "ONBUILD":
            trigger = rest.split(None, 1)[0].upper()
            if trigger == "ONBUILD":
                raise InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if trigger in ("FROM", "MAINTAINER"):
                raise InvalidArgument(f"{trigger} isn't allowed as an ONBUILD trigger")
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [rest]
        elif instr == "USER":
            words = _words(rest, env)
            if len(words) != 1:
                raise InvalidArgument("USER requires exactly one argument")
            cfg["User"] = words[0]
        elif instr == "VOLUME":
            arr = _json_array(rest, instr)
            vols = dict(cfg.get("Volumes") or {})
            for v in arr if arr is not None else _words(rest, env):
                if not v.strip():
                    raise InvalidArgument("VOLUME specified can not be an empty string")
                vols[v] = {}
            cfg["Volumes"] = vols
        elif instr == "WORKDIR":
            words = _words(rest, env)
            if len(words) != 1:
                raise InvalidArgument("WORKDIR requires exactly one argument")
            wd = words[0]
            if not wd.startswith("/"):
                wd = posixpath.join(cfg.get("WorkingDir") or "/", wd)
            cfg["WorkingDir"] = posixpath.normpath(wd) if wd != "/" else "/"
    return cfg


def _json_array(rest: str, instr: str) -> list[str] | None:
    """The exec (JSON) form, or None for the shell form (as Dockerfile: what does not parse is shell)."""
    if not rest.startswith("["):
        return None
    try:
        v = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
        raise InvalidArgument(f"{instr}: a JSON array must hold strings only")
    return v


def _env_map(env: list[str]) -> dict[str, str]:
    out = {}
    for e in env:
        k, _, v = e.partition("=")
        out[k] = v
    return out


def _words(s: str, env: dict[str, str]) -> list[str]:
    """Dockerfile words: whitespace separates, quotes group, backslash escapes, $VAR / ${VAR} /
    ${VAR:-x} / ${VAR:+x} expand (not inside single quotes)."""
    words: list[str] = []
    cur: list[str] = []
    have = False
    i, n = 0, len(s)
    quote = ""
    while i < n:
        c = s[i]
        if quote == "'" or (quote == '"' and c not in "\\$"):
            if c == quote:
                quote = ""
            else:
                cur.append(c)
            i += 1
            continue
        if c == "\\" and i + 1 < n:
            cur.append(s[i + 1])
            have = True
            i += 2
            continue
        if c == "$":
            val, i = _expand(s, i, env)
            cur.append(val)
            have = True
            continue
        if c in "'\"":
            quote, have = c, True
        elif c.isspace():
            if have or cur:
                words.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
        i += 1
    if quote:
        raise InvalidArgument(f"unexpected end of statement while looking for matching {quote}: {s}")
    if have or cur:
        words.append("".join(cur))
    return words


def _expand(s: str, i: int, env: dict[str, str]) -> tuple[str, int]:
    """The value of the variable reference at s[i] ("$"); returns (text, index after it)."""
    n = len(s)
    if i + 1 < n and s[i + 1] == "{":
        end = s.find("}", i + 2)
        if end < 0:
            raise InvalidArgument(f"missing '}}' in {s!r}")
        body = s[i + 2:end]
        for op in (":-", ":+", "-", "+"):
            name, sep, word = body.partition(op)
            if sep and name.replace("_", "a").isalnum():
                val = env.get(name)
                if op == ":-":
                    return (val if val else word), end + 1
                if op == ":+":
                    return (word if val else ""), end + 1
                if op == "-":
                    return (val if val is not None else word), end + 1
                return (word if val is not None else ""), end + 1
        if not body.replace("_", "a").isalnum():
            raise InvalidArgument(f"bad substitution: ${{{body}}}")
        return env.get(body, ""), end + 1
    j = i + 1
    while j < n and (s[j].isalnum() or s[j] == "_"):
        j += 1
    if j == i + 1:
        return "$", j
    return env.get(s[i + 1:j], ""), j


def _pairs(rest: str, instr: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """ENV/LABEL's `k=v k2="v 2"` form, or the legacy `k v w` (one pair: k, "v w")."""
    words = _words(rest, env)
    if words and "=" not in words[0]:
        if len(words) < 2:
            raise InvalidArgument(f"{instr} must have two arguments")
        key = words[0]
        raw = rest.strip()[len(rest.strip().split(None, 1)[0]):].strip()
        return [(key, " ".join(_words(raw, env)) if raw else "")]
    out = []
    for w in words:
        k, sep, v = w.partition("=")
        if not sep or not k:
            raise InvalidArgument(f"{instr} names can not be blank or without '=': {w!r}")
        out.append((k, v))
    return out


def _ports(word: str) -> list[str]:
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    lo, sep, hi = port.partition("-")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {port}") from None
    if not (0 < a <= 65535 and 0 < b <= 65535 and a <= b):
        raise InvalidArgument(f"invalid containerPort: {port}")
    return [f"{p}/{proto}" for p in range(a, b + 1)]


# --- commit ---------------------------------------------------------------------------------------

def commit_container(svc, key: str, *, run_config: dict, author: str = "", comment: str = "",
                     created_by: str = "", ref: str | None = None, placeholders=()) -> str:
    """Container ``key``'s writable layer as a new image on its image; returns the image ID."""
    from ketch.images.service import IMAGE_LABEL
    st, _, _ = _container_root(svc, key)
    base_id = st["labels"].get(IMAGE_LABEL)
    entry = {"created_by": created_by}
    if author:
        entry["author"] = author
    if comment:
        entry["comment"] = comment
    return commit_step(svc, key, base_id or "", run_config=run_config, history=[entry], author=author,
                       tags=[ref] if ref else (), placeholders=placeholders)


def commit_step(svc, key: str | None, base: str | None, *, run_config: dict, history: list[dict],
                author: str = "", tags=(), placeholders=(), parent: str | None = None,
                in_place: bool = False) -> str:
    """A new image on image ``base`` (None: on nothing, as FROM scratch): the changes of root
    ``key`` (a snapshot over ``base``'s layers) as one more layer, or none when ``key`` is None or
    changed nothing; ``run_config`` as its config, ``history`` appended to ``base``'s (each entry's
    ``created`` filled in; the last one marks the layer, or ``empty_layer`` when there is none;
    the others are ``empty_layer``). ``parent``: the image it was built on, kept as Docker's
    ``Parent`` (a build's intermediate images). ``in_place`` (root ``key`` is mounted nowhere, and is
    removed after: a build's COPY step): its upper dir is moved into the new snapshot and becomes the
    layer as the tar is written (write_upper in_place), instead of a copy; ``key`` is left an empty
    upper dir. A new inode costs ~0.7 ms on this kind of host's ext4: a COPY of 3,000 files spent
    as long again in the copy. Returns the image ID."""
    from ketch.archive.upper import write_upper
    from ketch.snapshots.changes import placeholders as find_placeholders
    from ketch.snapshots.overlay import OWNER_LABEL, owner_label
    refs = []
    for ref in tags:
        r = reference.parse(ref)
        if r.digest:
            raise InvalidArgument(f"commit {ref}: cannot tag with a digest reference")
        refs.append(str(r))
    sn = svc.snapshots
    with svc.meta.content_guard():
        rec, base_cfg, manifest = _step_base(svc, base, f"container {key}")
        chain_below = rec.get("chain")
        empty, diff_id, blob, size, chain, res = True, None, None, 0, chain_below, None
        if key is not None:
            st, upper, lowers = _container_root(svc, key)
            if st["parent"] != chain_below:
                raise FailedPrecondition(f"container {key}: its root is not on its image's layers")
            skip = find_placeholders(upper, lowers, placeholders)
            tmp = f"extract-{os.urandom(6).hex()}"
            sn.prepare(tmp, None, labels={OWNER_LABEL: owner_label()})
            w = svc.content.writer()
            try:
                if in_place:
                    res = write_upper(_move_upper(upper, sn.upper_dir(tmp)), w, skip=skip, in_place=True)
                else:
                    res = write_upper(upper, w, copy_to=sn.upper_dir(tmp), skip=skip)
                empty = res.entries == 0
                if empty:
                    w.abort()
                    sn.remove(tmp)
                else:
                    size = w.offset
                    blob = w.commit()
                    diff_id = str(blob)  # an uncompressed tar: its digest is its diffID
                    chain = dg.chain_id([chain_below, diff_id]) if chain_below else str(dg.parse(diff_id))
                    try:
                        sn.commit(chain, tmp, parent=chain_below)
                    except AlreadyExists:
                        sn.remove(tmp)  # the very same change was committed before: that layer is this one
            except BaseException:
                try:
                    w.abort()
                except InvalidArgument:
                    pass  # committed already
                try:
                    sn.remove(tmp)
                except NotFound:
                    pass
                raise
        created = _rfc3339(time.time())
        entries = []
        for i, h in enumerate(history):
            entry = {"created": created, **h}
            if empty or i < len(history) - 1:
                entry["empty_layer"] = True
            entries.append(entry)
        layer = None
        if not empty and res is not None:
            layer = (diff_id, {"mediaType": mt.OCI_LAYER, "digest": str(blob), "size": size}, chain, res.size)
        cfg_bytes, cfg_digest = _step_config(svc, base_cfg, created=created, author=author, run_config=run_config,
                                             diff_id=diff_id if layer else None, history=entries)
        return _register_step(svc, rec, manifest, cfg_bytes, cfg_digest, layer, tags=refs, parent=parent)


def commit_cached_step(svc, source: str, index: int, base: str | None, *, run_config: dict,
                       parent: str | None = None) -> str:
    """A build step's image taken from image ``source`` (`--cache-from`) instead of running the step:
    image ``base``'s layers and history, ``source``'s history entry ``index`` as it is (its time,
    its words) and, unless that entry is an empty layer, the layer it made: the same blob and the
    same snapshot, by digest, nothing unpacked or copied. ``run_config`` is the new image's config
    (the builder's, as dockerd's restoreCachedImage takes it). ``base``'s history and layers must be
    the first of ``source``'s (the builder matched them; checked again here). When the new config
    is byte for byte an image's already stored (the step that made ``source`` itself, or an
    intermediate image of it restored before) that image is the answer, given ``parent`` when it has
    none. Returns the image ID."""
    with svc.meta.content_guard():
        rec, base_cfg, manifest = _step_base(svc, base, "a cached step")
        src_id, src_rec = svc.resolve(source)
        src_cfg = svc.config(src_id)
        hist = list(src_cfg.get("history") or [])
        src_diffs = list((src_cfg.get("rootfs") or {}).get("diff_ids") or [])
        diffs = list((base_cfg.get("rootfs") or {}).get("diff_ids") or [])
        below = sum(1 for h in hist[:index] if not h.get("empty_layer"))
        if not 0 <= index < len(hist) or hist[:index] != list(base_cfg.get("history") or []) \
                or below != len(diffs) or src_diffs[:below] != diffs:
            raise FailedPrecondition(f"image {src_id}: its history does not begin with image {base}'s")
        entry = hist[index]
        layer = None
        if not entry.get("empty_layer"):
            if below >= len(src_diffs):
                raise FailedPrecondition(f"image {src_id}: history entry {index} names a layer it does not have")
            d = svc.manifest(src_rec).layers[below]
            sizes = list(src_rec.get("layer_sizes") or [])
            layer = (src_diffs[below], {"mediaType": _OCI_LAYER_TYPE.get(d.media_type, d.media_type),
                                        "digest": d.digest, "size": d.size},
                     src_rec["chains"][below], sizes[below] if below < len(sizes) else None)
        cfg_bytes, cfg_digest = _step_config(svc, base_cfg, created=entry.get("created") or _rfc3339(time.time()),
                                             author="", run_config=run_config,
                                             diff_id=layer[0] if layer else None, history=[entry])
        with svc.meta.write() as doc:
            known = doc["images"].get(cfg_digest)
            if known is not None:
                if parent and not known.get("parent"):
                    known["parent"] = parent
                return cfg_digest
        return _register_step(svc, rec, manifest, cfg_bytes, cfg_digest, layer, tags=(), parent=parent)


def _step_base(svc, base: str | None, what: str) -> tuple[dict, dict, oci.Manifest | None]:
    """(record, config, manifest) of the image a build step is on; FROM scratch's for None."""
    if base is None:
        return {}, {"architecture": oci_arch(), "os": "linux"}, None
    try:
        base_id, rec = svc.resolve(base)
    except (NotFound, InvalidArgument):
        raise FailedPrecondition(f"{what}: its image {base} is no longer stored") from None
    return rec, svc.config(base_id), svc.manifest(rec)


def _step_config(svc, base_cfg: dict, *, created: str, author: str, run_config: dict, diff_id: str | None,
                 history: list[dict]) -> tuple[bytes, str]:
    """A step image's config (its parent's, with the run config, one more diffID, the new history
    entries), stored; (its bytes, its digest: the image ID)."""
    cfg = {k: v for k, v in base_cfg.items() if k not in ("config", "rootfs", "history", "created", "author",
                                                          "container", "container_config")}
    cfg["created"] = created
    if author:
        cfg["author"] = author
    cfg["config"] = run_config
    diff_ids = list((base_cfg.get("rootfs") or {}).get("diff_ids") or [])
    if diff_id:
        diff_ids.append(diff_id)
    cfg["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    cfg["history"] = list(base_cfg.get("history") or []) + history
    cfg_bytes = oci.canonical_json(cfg)
    return cfg_bytes, str(svc.content.put(cfg_bytes))


def _register_step(svc, rec: dict, manifest, cfg_bytes: bytes, cfg_digest: str, layer, *, tags, parent) -> str:
    """The step image's manifest (its parent's layers, plus ``layer``: (diffID, descriptor, ChainID,
    size) or None) stored and the image registered."""
    layers = [{"mediaType": _OCI_LAYER_TYPE.get(d.media_type, d.media_type), "digest": d.digest,
               "size": d.size} for d in (manifest.layers if manifest is not None else ())]
    chains = list(rec.get("chains") or [])
    sizes = list(rec.get("layer_sizes") or [None] * len(chains))
    if layer is not None:
        layers.append(layer[1])
        chains.append(layer[2])
        sizes.append(layer[3])
    man = oci.canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                              "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg_digest,
                                         "size": len(cfg_bytes)},
                              "layers": layers})
    m_digest = svc.content.put(man)
    return svc.register(manifest_digest=str(m_digest), media_type=mt.OCI_MANIFEST, config_digest=cfg_digest,
                        chains=chains, layer_sizes=sizes, tags=tags, parent=parent)


def oci_arch() -> str:
    """This machine's architecture in OCI's words (an image built FROM scratch is of the host's)."""
    from ketch.oci import platform as oplatform
    return oplatform.host().architecture
