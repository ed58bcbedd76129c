"""The async face of ImageService for the daemon (the protocol in ketch/engine/ports.py).

    images = AsyncImageService("/var/lib/ketch", events=bus)
    # or load_image_service("ketch.images.async_service:AsyncImageService", root), then images.events = bus

Container roots are mounted at ``<root>/rootfs/<key>/merged``. Blocking work runs in threads.
Pull/push/import yield Docker JSON progress messages; save yields tar bytes; load and import
take async iterators of byte chunks.

Image events (pull, push, tag, untag, delete, load, import, prune) are published here, on the
optional ``events`` publisher (anything with ``publish(event)``: ketch.events.EventBus), so they
reach ``/events`` whoever asked for the operation; always on the event loop, after the
blocking work came back from its thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time

from ketch import space
from ketch.errors import InvalidArgument, KetchError, NotFound, ResourceExhausted
from ketch.events import label_match
from ketch.images.record import Image
from ketch.images.service import ImageService, rfc3339
from ketch.oci import reference

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _mounted(path):
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path:
                return True
    return False


class AsyncImageService:
    def __init__(self, data_root, *, insecure=(), mirrors=(), docker_config=None, events=None,
                 registry_timeouts=None):
        self.svc = ImageService(data_root, insecure=insecure, mirrors=mirrors, docker_config=docker_config,
                                registry_timeouts=registry_timeouts)
        self.mirrors = self.svc.mirrors    # what /info shows as RegistryConfig.Mirrors
        self.insecure = self.svc.insecure  # and as its insecure IndexConfigs
        self.mount_root = os.path.join(self.svc.root, "rootfs")
        os.makedirs(self.mount_root, mode=0o711, exist_ok=True)
        self.events = events

    def _publish(self, action: str, actor_id: str, name: str | None, **attrs) -> None:
        """An image event in Docker's shape, with the old API's status and id (the docker CLI reads them)."""
        if self.events is None:
            return
        from ketch.events import make_event
        ev = make_event("image", action, actor_id, {"name": name, **attrs} if name is not None else attrs)
        ev["status"], ev["id"] = action, actor_id
        self.events.publish(ev)

    def _tmpdir(self) -> str:
        d = os.path.join(self.svc.root, "tmp")
        os.makedirs(d, exist_ok=True)
        return d

    def add_usage_check(self, fn):
        self.svc.add_usage_check(fn)

    def _target(self, key):
        if not _KEY.fullmatch(key or ""):
            raise InvalidArgument(f"container key {key!r}: not a valid name")
        return os.path.join(self.mount_root, key, "merged")

    # --- the ImageService protocol ------------------------------------------------------

    async def get_image(self, name_or_id):
        def get():
            iid, rec = self.svc.resolve(name_or_id)
            cfg = self.svc.config(iid)
            insp = self.svc.inspect(iid)
            return Image(iid, insp["RepoTags"], cfg, insp["RepoDigests"], insp["Size"],
                               cfg.get("created") or rfc3339(rec.get("added")))
        return await asyncio.to_thread(get)

    async def create_rootfs(self, image_id, key):
        self._target(key)
        await asyncio.to_thread(self.svc.prepare_rootfs, image_id, key)

    async def mount_rootfs(self, key):
        target = self._target(key)

        def do():
            os.makedirs(target, exist_ok=True)
            if not _mounted(target):
                self.svc.snapshots.mount(key, target)
            return target
        return await asyncio.to_thread(do)

    async def unmount_rootfs(self, key):
        target = self._target(key)

        def do():
            while os.path.isdir(target) and _mounted(target):
                self.svc.snapshots.unmount(target, detach=True)
        await asyncio.to_thread(do)

    async def remove_rootfs(self, key):
        await self.unmount_rootfs(key)
        target = self._target(key)

        def do():
            self.svc.remove_rootfs(key)
            for d in (target, os.path.dirname(target)):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
        await asyncio.to_thread(do)

    async def rootfs_usage(self, key):
        try:
            return (await asyncio.to_thread(self.svc.snapshots.usage, key))["bytes"]
        except NotFound:
            return 0

    async def layers_size(self):
        """/system/df's LayersSize: every unpacked layer's bytes, each layer once."""
        return await asyncio.to_thread(self.svc.layers_size)

    # --- the /images endpoints ----------------------------------------------------------

    async def list_images(self, all_=False, filters=None):
        """GET /images/json. Filters, as dockerd's: dangling (true|false), label and label! (key or
        key=value; every label must match, no label! may), reference (Docker's glob patterns on
        the familiar name, with or without the tag: only the matching tags are listed), before
        and since (an image: those created before or after it), until (a time or a duration).
        An unknown filter or a bad value is a 400."""
        filters = dict(filters or {})
        for k in filters:
            if k not in IMAGE_LIST_FILTERS:
                raise InvalidArgument(f"invalid filter '{k}'")
        dangling = None
        for v in _values(filters.get("dangling")):
            if v.lower() not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={v}'")
            dangling = v.lower() in ("true", "1")
        patterns = _values(filters.get("reference"))
        for p in patterns:
            _glob(p)  # a bad pattern is refused before anything is listed
        want, refuse = _values(filters.get("label")), _values(filters.get("label!"))
        until = [until_timestamp(u) for u in _values(filters.get("until"))]

        def listing():
            out = self.svc.list(all_)
            created = {im["Id"]: im["Created"] for im in out}

            def created_of(name, key):
                try:
                    iid = self.svc.resolve(name)[0]
                except NotFound:
                    raise NotFound(f"No such image: {name}") from None
                except InvalidArgument:
                    raise InvalidArgument(f"invalid filter '{key}={name}'") from None
                return created.get(iid, 0)
            before = [created_of(v, "before") for v in _values(filters.get("before"))]
            since = [created_of(v, "since") for v in _values(filters.get("since"))]
            return out, before, since
        images, before, since = await asyncio.to_thread(listing)
        res = []
        for im in images:
            if dangling is True and im["RepoTags"] or dangling is False and not im["RepoTags"]:
                continue
            labels = im.get("Labels") or {}
            if want and not all(label_match(labels, x) for x in want):
                continue
            if any(label_match(labels, x) for x in refuse):
                continue
            if before and not im["Created"] < min(before):
                continue
            if since and not im["Created"] > max(since):
                continue
            if until and not im["Created"] < min(until):
                continue
            if patterns:
                tags = [t for t in im["RepoTags"] if any(reference_match(p, t) for p in patterns)]
                if not tags:
                    continue
                im = {**im, "RepoTags": tags}
            res.append(im)
        return res

    async def inspect_image(self, name):
        return await asyncio.to_thread(self.svc.inspect, name)

    async def image_history(self, name):
        return await asyncio.to_thread(self.svc.history, name)

    async def _image_id(self, name):
        try:
            return (await asyncio.to_thread(self.svc.resolve, name))[0]
        except KetchError:
            return None

    async def tag_image(self, name, repo, tag):
        target = f"{repo}:{tag or 'latest'}"
        await asyncio.to_thread(self.svc.tag, name, target)
        iid = await self._image_id(target)
        self._publish("tag", iid or name, reference.parse(target).familiar())

    async def remove_image(self, name, force=False, noprune=False):
        iid = await self._image_id(name)
        out = await asyncio.to_thread(self.svc.remove, name, force, not noprune)
        self._publish_removed(out, iid)
        return out

    def _publish_removed(self, items, iid=None):
        """untag and delete events for an rmi or prune answer ([{"Untagged": x} | {"Deleted": id}])."""
        pending = []
        for item in items or []:
            if "Untagged" in item:
                pending.append(item["Untagged"])
            elif "Deleted" in item:
                for t in pending:
                    self._publish("untag", item["Deleted"], t)
                pending = []
                self._publish("delete", item["Deleted"], item["Deleted"])
        for t in pending:  # untagged only (rmi -f of an image in use, one tag of several)
            self._publish("untag", iid or t, t)

    async def prune_images(self, all_=False, filters=None):
        """POST /images/prune. Filters: dangling (true, the default: untagged images only; false:
        every image no container uses), until (a timestamp or a duration: images created before
        it), label and label! (key or key=value). Answers {"ImagesDeleted", "SpaceReclaimed"}."""
        filters = dict(filters or {})
        for k in filters:
            if k not in ("dangling", "until", "label", "label!"):
                raise InvalidArgument(f"invalid filter '{k}'")
        dangling = _values(filters.get("dangling"))
        if dangling:
            v = dangling[-1].lower()
            if v not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={v}'")
            all_ = all_ or v in ("false", "0")
        until = [until_timestamp(u) for u in _values(filters.get("until"))]
        want, refuse = _values(filters.get("label")), _values(filters.get("label!"))

        def chosen(iid):
            insp = self.svc.inspect(iid)
            if until and (_created_ts(insp.get("Created")) or 0.0) >= min(until):
                return False
            labels = (insp.get("Config") or {}).get("Labels") or {}
            if want and not all(label_match(labels, x) for x in want):
                return False
            return not any(label_match(labels, x) for x in refuse)

        def prune():
            select = None
            if until or want or refuse:  # chosen before: prune holds the metadata lock inspect takes
                ok = {s["Id"] for s in self.svc.list(True) if chosen(s["Id"])}
                select = ok.__contains__
            return self.svc.prune(all_, select)
        res = await asyncio.to_thread(prune)
        self._publish_removed(res["ImagesDeleted"])
        self._publish("prune", "", None, reclaimed=str(res["SpaceReclaimed"]))
        return {"ImagesDeleted": res["ImagesDeleted"], "SpaceReclaimed": res["SpaceReclaimed"]}

    async def check(self, repair=False):
        """`system check`: {"Problems": [{"area", "what", "problem"}], "Blobs", "Snapshots", "Images",
        "Ingests", "Repaired"}."""
        def run():
            problems = self.svc.check(repair=repair)
            return {"Problems": problems, "Blobs": sum(1 for _ in self.svc.content.list()),
                    "Snapshots": len(self.svc.snapshots.list()), "Images": len(self.svc.meta.snapshot()["images"]),
                    "Ingests": len(self.svc.content.ingests()), "Repaired": bool(repair)}
        return await asyncio.to_thread(run)

    async def auth(self, username, password, server):
        """POST /auth: check the credentials against the registry. The daemon keeps nothing: the
        check's own credentials file is a temp file, removed at once; the client stores them."""
        if not username or not password:
            raise InvalidArgument("login: username and password are required")
        domain = registry_domain(server)
        fd, path = tempfile.mkstemp(prefix="auth-", suffix=".json", dir=self._tmpdir())
        os.close(fd)
        try:
            from ketch.registry import RegistryClient
            connect, read = self.svc.registry_timeouts
            async with RegistryClient(insecure=tuple(self.svc.insecure), docker_config=path,
                                      connect_timeout=connect, read_timeout=read) as c:
                await c.login(domain, username, password, config=path)
        finally:
            os.unlink(path)
        return {"Status": "Login Succeeded", "IdentityToken": ""}

    async def _events(self, coro_fn, on_success=None):
        q = asyncio.Queue()
        task = asyncio.create_task(coro_fn(q.put_nowait))
        task.add_done_callback(lambda t: q.put_nowait(None))
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    break
                yield ev
        finally:
            if not task.done():  # the client went away: stop the work
                task.cancel()
        exc = task.exception()
        if exc is not None:
            yield {"errorDetail": {"message": str(exc)}, "error": str(exc)}
        elif on_success is not None:
            on_success()

    def pull_image(self, ref, tag=None, platform=None, auth=None, all_tags=False):
        """Progress messages of a pull; ``all_tags``: every tag of the repository ``ref``, in turn."""
        if tag and "@" not in ref:
            ref = f"{ref}:{tag}" if not tag.startswith("sha256:") else f"{ref}@{tag}"
        if all_tags:
            return self._pull_all(ref, platform, auth)
        r = reference.parse(ref)
        return self._events(lambda p: self.svc.pull(ref, platform=platform, progress=p, auth=auth),
                            lambda: self._publish("pull", r.familiar(), r.familiar_name()))

    async def _pull_all(self, ref, platform, auth):
        try:
            r = reference.parse(ref)
            if r.digest or ":" in ref.rsplit("/", 1)[-1]:
                raise InvalidArgument("tag can't be used with --all-tags/-a")
            endpoints = self.svc.pull_endpoints(r)
            for i, mirror in enumerate(endpoints):  # the tags as the first endpoint that answers has them
                try:
                    async with self.svc.client(auth, mirror=mirror) as c:
                        tags = sorted(await c.list_tags(r.repository()))
                    break
                except KetchError:
                    if i == len(endpoints) - 1:
                        raise
        except KetchError as e:
            yield {"errorDetail": {"message": str(e)}, "error": str(e)}
            return
        for t in tags:
            failed = False
            async for msg in self.pull_image(str(r.with_tag(t)), platform=platform, auth=auth):
                failed = failed or "error" in msg
                yield msg
            if failed:
                return

    def push_image(self, name, tag=None, auth=None):
        if tag:
            name = f"{name}:{tag}"
        r = reference.parse(name)
        return self._events(lambda p: self.svc.push(name, progress=p, auth=auth),
                            lambda: self._publish("push", r.familiar(), r.familiar_name()))

    async def import_image(self, stream, repo="", tag="", message="", changes=(), platform=None):
        """POST /images/create?fromSrc=-: a root file system tarball (async byte chunks) becomes a
        one-layer image, tagged repo[:tag] if a repo is given; yields progress, then {"status": <image ID>}."""
        ref = None
        if repo:
            ref = str(reference.parse(f"{repo}:{tag}" if tag and "@" not in repo else repo))
        with tempfile.TemporaryFile(dir=self._tmpdir()) as tmp:
            try:
                n = await _spool(stream, tmp, "the tarball to import", self._tmpdir())
            except ResourceExhausted as e:
                yield {"errorDetail": {"message": str(e)}, "error": str(e)}
                return
            yield {"status": "Importing", "progressDetail": {"current": n, "total": n}, "id": "rootfs"}
            try:
                iid = await asyncio.to_thread(self.svc.import_rootfs, tmp, ref, tuple(changes), message, platform)
            except Exception as e:  # noqa: BLE001 - reported in the stream, as Docker does
                yield {"errorDetail": {"message": str(e)}, "error": str(e)}
                return
        self._publish("import", iid, reference.parse(ref).familiar() if ref else iid)
        yield {"status": iid}

    async def save_images(self, names, format="docker-archive"):
        r, w = os.pipe()
        wf = os.fdopen(w, "wb")

        def produce():
            try:
                self.svc.save(names, wf, format)
            finally:
                wf.close()
        task = asyncio.create_task(asyncio.to_thread(produce))
        with os.fdopen(r, "rb") as rf:
            while True:
                chunk = await asyncio.to_thread(rf.read1, 1 << 20)
                if not chunk:
                    break
                yield chunk
        await task

    async def load_images(self, stream, quiet=False):
        with tempfile.TemporaryFile(dir=self._tmpdir()) as tmp:
            try:
                await _spool(stream, tmp, "the archive to load", self._tmpdir())
            except ResourceExhausted as e:
                yield {"errorDetail": {"message": str(e)}, "error": str(e)}
                return
            events = []
            try:
                loaded = await asyncio.to_thread(self.svc.load, tmp, events.append)
            except Exception as e:  # noqa: BLE001 - reported in the stream, as Docker does
                for ev in events:
                    yield ev
                yield {"errorDetail": {"message": str(e)}, "error": str(e)}
                return
        for img in loaded:
            self._publish("load", img["id"], reference.parse(img["tags"][0]).familiar() if img["tags"] else img["id"])
        for ev in events:
            yield ev

    # --- a container's writable layer: diff and commit (ketch/images/commit.py) --------------

    async def rootfs_changes(self, key, placeholders=()):
        """GET /containers/{id}/changes: [{"Path", "Kind"}] of container root ``key``."""
        from ketch.images.commit import container_changes
        return await asyncio.to_thread(container_changes, self.svc, key, placeholders)

    async def commit_rootfs(self, key, *, run_config, author="", comment="", created_by="", ref=None,
                            placeholders=()):
        """POST /commit: container root ``key``'s changes as a new image (tagged ``ref``); its ID.
        A tag event follows when it is tagged, as dockerd publishes one."""
        from ketch.images.commit import commit_container

        def run():
            return commit_container(self.svc, key, run_config=run_config, author=author, comment=comment,
                                    created_by=created_by, ref=ref, placeholders=placeholders)
        iid = await asyncio.to_thread(run)
        if ref:
            self._publish("tag", iid, reference.parse(ref).familiar())
        return iid


    # --- a build's steps (ketch/engine/builds.py) ---------------------------------------------

    async def create_build_root(self, image_id, key):
        """A build step's root over ``image_id``'s layers; an empty one for None (FROM scratch)."""
        self._target(key)
        await asyncio.to_thread(self.svc.prepare_build_root, image_id, key)

    async def build_root_upper(self, key):
        """The upper dir of build root ``key`` (what a step wrote; read or written only unmounted)."""
        return await asyncio.to_thread(self.svc.snapshots.upper_dir, key)

    async def step_layer_dir(self, image_id, parent_id):
        """The dir of the layer image ``image_id`` adds on image ``parent_id`` (a build step's), or
        None when it is not stored or is not one layer on exactly that parent's layers."""
        def do():
            try:
                top = self.svc.resolve(image_id)[1].get("chain")
                below = self.svc.resolve(parent_id)[1].get("chain") if parent_id else None
                if top is None or top == below or self.svc.snapshots.stat(top)["parent"] != below:
                    return None
                return self.svc.snapshots.layer_dirs(top)[0]
            except KetchError:
                return None
        return await asyncio.to_thread(do) if image_id else None

    async def commit_step(self, key, base, *, run_config, history, tags=(), parent=None,
                          placeholders=(), in_place=False):
        """A build step's image: root ``key``'s changes (None: no layer) on image ``base`` (None:
        scratch), ``run_config`` its config, ``history`` its new history entries; its ID."""
        from ketch.images.commit import commit_step

        def run():
            return commit_step(self.svc, key, base, run_config=run_config, history=history, tags=tags,
                               parent=parent, placeholders=placeholders, in_place=in_place)
        iid = await asyncio.to_thread(run)
        for t in tags:
            self._publish("tag", iid, reference.parse(t).familiar())
        return iid

    async def commit_cached_step(self, source, index, base, *, run_config, parent=None):
        """`--cache-from`: a build step's image made of image ``source``'s history entry ``index`` and
        the layer it made (shared by digest) on image ``base``; its ID (ketch/images/commit.py)."""
        from ketch.images.commit import commit_cached_step
        return await asyncio.to_thread(commit_cached_step, self.svc, source, index, base, run_config=run_config,
                                       parent=parent)

    async def tag_build(self, image_id, refs):
        """Point each of ``refs`` at ``image_id`` (a build's -t), with a tag event each."""
        for ref in refs:
            await self.tag_image(image_id, *_repo_tag(ref))


# --- helpers of the /images endpoints ------------------------------------------------------

def _repo_tag(ref: str) -> tuple[str, str]:
    r = reference.parse(ref)
    return r.familiar_name(), r.tag or "latest"


async def _spool(stream, tmp, what: str, where: str) -> int:
    """Copy an upload (async byte chunks) into ``tmp``, rewound; its size. A full disk is
    ResourceExhausted naming the whole upload's size: the rest is read and dropped first, so the
    client gets the answer, and the temp file goes with its block."""
    n = 0
    try:
        async for chunk in stream:
            tmp.write(chunk)
            n += len(chunk)
        tmp.flush()
    except OSError as e:
        if not space.is_enospc(e):
            raise
        tmp.truncate(0)
        async for chunk in stream:
            n += len(chunk)
        raise space.no_space(what, where, n) from None
    tmp.seek(0)
    return n


def registry_domain(server: str) -> str:
    """A registry address as `docker login` takes it ("https://index.docker.io/v1/", "host:port",
    "http://host:port/path") -> its domain ("docker.io", "host:port")."""
    s = (server or "").strip()
    for pre in ("https://", "http://"):
        if s.startswith(pre):
            s = s[len(pre):]
    s = s.split("/", 1)[0]
    if s in ("", "index.docker.io", "registry-1.docker.io"):
        return "docker.io"
    return s


def _values(v) -> list[str]:
    if not v:
        return []
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


IMAGE_LIST_FILTERS = ("dangling", "label", "label!", "reference", "before", "since", "until")


def _glob(pattern: str) -> re.Pattern:
    """Go's path.Match pattern as a regular expression: `*` and `?` stop at `/`, `[...]` and
    `[^...]` are classes, `\\` escapes; a malformed one is Go's ErrBadPattern, a 400."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i >= n:
                raise InvalidArgument(f"invalid filter 'reference={pattern}': syntax error in pattern")
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] == "^" else i + 1)
            if j < 0:
                raise InvalidArgument(f"invalid filter 'reference={pattern}': syntax error in pattern")
            body = pattern[i + 1:j]
            neg = body.startswith("^")
            body = body[1:] if neg else body
            if not body:
                raise InvalidArgument(f"invalid filter 'reference={pattern}': syntax error in pattern")
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out) + r"\Z", re.S)
    except re.error:
        raise InvalidArgument(f"invalid filter 'reference={pattern}': syntax error in pattern") from None


def reference_match(pattern: str, familiar: str) -> bool:
    """Docker's reference filter (FamiliarMatch): the pattern matches the familiar reference
    (`busybox:latest`, `example.com/a/b:1`) or, failing that, its name without the tag."""
    rx = _glob(pattern)
    if rx.match(familiar):
        return True
    name = familiar.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name[:name.rindex(":")]
    return bool(rx.match(name))



_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def until_timestamp(value: str, now: float | None = None) -> float:
    """Docker's `until`: a Go duration before now ("10m", "1h30m"), a Unix time ("1700000000.5")
    or an RFC 3339 date or time ("2024-01-02", "2024-01-02T15:04:05Z")."""
    v = value.strip()
    now = time.time() if now is None else now
    if v and _DURATION.fullmatch(v) or (v and _DURATION.sub("", v) == ""):
        return now - sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(v))
    try:
        return float(v)
    except ValueError:
        pass
    ts = _created_ts(v)
    if ts is None:
        raise InvalidArgument(f"invalid filter 'until={value}': not a timestamp or a duration")
    return ts


def _created_ts(v) -> float | None:
    """An RFC 3339 (or date-only) string -> Unix time; None if it is not one."""
    if not v:
        return None
    from datetime import datetime, timezone
    s = re.sub(r"(\.\d{6})\d+", r"\1", str(v).strip()).replace("Z", "+00:00")
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()
