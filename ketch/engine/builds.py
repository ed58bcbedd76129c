"""The build engine behind `ketch build`, `POST /build` and `docker build`: Dockerfile steps run as
containers whose writable layers are committed, with an exact content cache.

The front half is pure (`ketch.build`: `parse`, `plan`, typed instructions, `Expander`); this is
the driver, in the engine because a step is a container. A build, as dockerd's classic builder:

1. The context: the request body (a tar, plain or compressed, or a bare Dockerfile) is spooled to
   disk and unpacked under `<data-root>/build/tmp/<id>/context` by the archive extractor (names
   that climb out are refused); the Dockerfile is read and planned (`--target`, build args)
   before any step runs, so a bad Dockerfile is an error with its line and nothing is made.
2. The stages the target needs, in plan order. FROM: an earlier stage's image, `scratch`, or an
   image (pulled when missing, or always with `pull`); the base's ONBUILD triggers run first.
3. Each instruction is a step that makes an image (as the classic builder does: every step has
   an image ID, the cache's unit; intermediate images carry `Parent` and are listed with `-a`
   only). Metadata instructions change the config and add an `empty_layer` history entry; RUN
   is a container of the step's image (the stage's env, user, workdir, shell, `--network`,
   `--mount`s) whose upper directory is committed (`images.commit_step`); COPY/ADD mount a
   fresh root over the image and write into it through the in-root extractor (buildcopy.py).
4. The cache: a step's key is a digest of the parent image ID, the config the step leaves, the
   step's history text (the instruction after expansion, with the build args in scope for
   RUN, as Docker prefixes them: `|1 V=1 /bin/sh -c ...`), its flags, and for COPY/ADD the
   digest of the copied files' content and metadata (no mtimes). A key maps to the image ID it
   made (`<data-root>/build/cache/<key>`); a hit whose image is still stored is reused without
   running anything (`---> Using cache`). `--cache-from IMAGE` (`cachefrom`): a step missing here
   is taken from an image whose history and layers begin with the step's parent's and whose next
   history entry is the one the step writes (dockerd's classic rule; the entry's comment carries
   the digest of what the step reads beyond its words), its layer shared by digest.
5. The result is tagged (`t`), announced as `{"aux": {"ID": ...}}` and `Successfully built`.
   Intermediate containers and roots are removed on success and on failure (with `rm=false`
   the successful steps' containers are kept), and the context directory always.

Messages are Docker's JSON progress stream: `{"stream": "Step 1/5 : FROM busybox\\n"}`; a failure
after the first message is `{"errorDetail": {"message", "code"}, "error"}` (a RUN's exit code as
`code`, which the docker CLI exits with).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import posixpath
import shutil
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ketch.build import dockerfile as dfmod
from ketch.build import dockerignore
from ketch.engine import buildcontexts, buildcopy, buildurl
from ketch.engine.changes import PLACEHOLDERS
from ketch.errors import FailedPrecondition, Internal, InvalidArgument, KetchError, NotFound, NotImplementedYet

log = logging.getLogger("ketch.engine")

DEFAULT_SHELL = ["/bin/sh", "-c"]
# the keys of an image's run config a build carries from step to step
CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "OnBuild",
               "StopSignal", "Healthcheck", "ArgsEscaped", "Shell")
_NOP = "/bin/sh -c #(nop) "


@dataclass
class BuildOptions:
    """What a build is asked for (the query of POST /build, the flags of `ketch build`)."""
    dockerfile: str = "Dockerfile"
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_filter: list[str] = field(default_factory=list)
    pull: bool = False
    rm: bool = True
    forcerm: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"
    extra_hosts: list[str] = field(default_factory=list)
    shm_size: int = 0
    ulimits: list[dict] = field(default_factory=list)
    quiet: bool = False
    output: str = ""                    # "tar": the final stage's root streamed after the messages
    platform: str = ""
    auth: dict | None = None
    cache_from: list[str] = field(default_factory=list)   # images whose history seeds the cache
    # `RUN --mount=type=secret` values by id: held in memory only (the client sends them in a framed
    # prefix of the body, see ketch/api/builds.py), written to a tmpfs only while a step runs
    secrets: dict[str, bytes] = field(default_factory=dict, repr=False)
    # `--build-context`: the named contexts by name (ketch/engine/buildcontexts.py)
    contexts: dict[str, buildcontexts.NamedContext] = field(default_factory=dict)


class BuildError(Internal):
    """A build that failed after it started (a RUN's exit code, a COPY's missing file): `code` is the
    exit code the docker CLI exits with."""

    def __init__(self, message: str, code: int = 1, buildkit: str | None = None):
        super().__init__(message)
        self.code = code
        self.buildkit = buildkit or message   # BuildKit's words, which `ketch build` prints


@dataclass
class _Stage:
    """A stage while it is built: its image so far and what the next step starts from."""
    image: str | None                   # the last step's image ID (None: FROM scratch, nothing yet)
    config: dict
    args: dict[str, str]                # the ARGs in scope and their values
    cmd_set: bool = False               # CMD given in this stage (ENTRYPOINT keeps it then)
    author: str = ""
    no_cache: bool = False
    prefix: str = ""                    # "[name] " before the stage's lines when stages run at once
    hit: bool = False                   # the last step came from the cache


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _inputs(*parts: Any) -> str:
    """A RUN's or COPY's history comment: the digest of what the step reads beyond its `created_by`
    (the config it runs with, its flags, mounts and what they show, a heredoc file's body). With the
    parent's history and layers, it is what `--cache-from` compares: a source image's layer is
    reused only when the step would read the same."""
    return f"ketch.build.v1 inputs=sha256:{_key(*parts)}"


def _short(iid: str) -> str:
    return iid.split(":", 1)[-1][:12]


def _env_map(env: list[str]) -> dict[str, str]:
    out = {}
    for e in env or []:
        k, _, v = e.partition("=")
        out[k] = v
    return out


def _set_env(env: list[str], key: str, value: str) -> list[str]:
    out = [e for e in env if e.partition("=")[0] != key]
    out.append(f"{key}={value}")
    return out


def _go_quote_list(words: list[str]) -> str:
    """Go's %q of a []string, as the classic builder writes CMD and ENTRYPOINT into the history."""
    return "[" + " ".join(json.dumps(w) for w in words) + "]"


def _ports(words: list[str]) -> list[str]:
    out = []
    for w in words:
        port, _, proto = w.partition("/")
        proto = (proto or "tcp").lower()
        if "-" in port:
            lo, _, hi = port.partition("-")
            if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
                raise InvalidArgument(f"invalid containerPort: {w}")
            out += [f"{p}/{proto}" for p in range(int(lo), int(hi) + 1)]
        elif port.isdigit():
            out.append(f"{port}/{proto}")
        else:
            raise InvalidArgument(f"invalid containerPort: {w}")
    return out


class Builder:
    """Builds images from a context and a Dockerfile over the engine's collaborators."""

    def __init__(self, *, data_root: str, images, creator, lifecycle, queries, validate: Callable[[dict], Any]):
        self.root = os.path.join(data_root, "build")
        self.images = images
        self.creator = creator
        self.lifecycle = lifecycle
        self.queries = queries
        self.validate = validate
        self._locks: dict[str, asyncio.Lock] = {}

    # --- the context -----------------------------------------------------------------------------

    async def _receive(self, chunks: AsyncIterator[bytes], work: str, digests: dict[str, str]) -> str:
        """Spool the body to disk and unpack it (a tar), or keep it as the Dockerfile (not a tar);
        ``digests`` gets the sha256 of each regular file unpacked, by its path in the context."""
        ctx = os.path.join(work, "context")
        os.makedirs(ctx)
        spool = os.path.join(work, "context.tar")
        with open(spool, "wb") as f:
            async for chunk in chunks:
                await asyncio.to_thread(f.write, chunk)
        await asyncio.to_thread(_context_tmpfs, ctx, os.path.getsize(spool))

        def unpack() -> None:
            from ketch.archive import compression as cz
            from ketch.archive import extract_archive
            with open(spool, "rb") as f:
                head = f.read(512)
                f.seek(0)
                if not head.strip(b"\0"):
                    return   # an empty context (nothing, or a tar with no entries)
                if cz.detect(head[:8]) is None and not (len(head) >= 262 and head[257:262] == b"ustar") \
                        and head.strip():
                    with open(os.path.join(ctx, "Dockerfile"), "wb") as out:   # `docker build - < Dockerfile`
                        shutil.copyfileobj(f, out)
                    return
                if not head.strip(b"\0"):
                    return
                if cz.detect(head[:8]) is None:
                    # the docker CLI's `-f -` rewrites the tar (moby's ReplaceFileTarWrapper) and closes
                    # its pipe before the tar writer: no padding after the last file, no trailer.
                    # Go's reader takes that; zeros after the data make it a whole tar for ours
                    size = os.fstat(f.fileno()).st_size
                    with open(spool, "ab") as pad:
                        pad.write(b"\0" * ((-size) % 512 + 1024))
                extract_archive(f, ctx, "", follow_symlinks=False, digests=digests)
        try:
            await asyncio.to_thread(unpack)
        except KetchError as e:
            raise InvalidArgument(f"the build context: {e}") from None
        finally:
            os.unlink(spool)
        return ctx

    @staticmethod
    def _read_dockerfile(ctx: str, name: str) -> tuple[str, str]:
        rel = posixpath.normpath("/" + (name or "Dockerfile")).lstrip("/")
        from ketch.engine.rootpath import resolve
        path = resolve(ctx, "/" + rel)
        if not os.path.isfile(path) and rel == "Dockerfile" and os.path.isfile(os.path.join(ctx, "dockerfile")):
            path = os.path.join(ctx, "dockerfile")
        if not os.path.isfile(path):
            raise InvalidArgument(f"Cannot locate specified Dockerfile: {name or 'Dockerfile'}")
        with open(path, "rb") as f:
            return path, f.read().decode("utf-8", errors="replace")

    # --- the build -------------------------------------------------------------------------------

    async def build(self, chunks: AsyncIterator[bytes], opts: BuildOptions) -> AsyncIterator[dict]:
        """The progress messages of a build; an error before the first message is raised as is (a
        Dockerfile error: nothing ran), after it a BuildError or a KetchError ends the stream."""
        _refuse(opts)
        os.makedirs(os.path.join(self.root, "tmp"), exist_ok=True)
        work = os.path.join(self.root, "tmp", uuid.uuid4().hex)
        os.makedirs(work)
        run = _Run(self, opts, work)
        try:
            digests: dict[str, str] = {}
            body = await self._receive(chunks, work, digests)
            ctx = await asyncio.to_thread(buildcontexts.separate, body, opts.contexts)
            if ctx == body:   # (named contexts moved the main context's files: they are read again)
                real = os.path.realpath(ctx)
                run.digests = {os.path.join(real, rel): d for rel, d in digests.items()}
            path, text = self._read_dockerfile(ctx, opts.dockerfile)
            df = dfmod.parse(text, os.path.basename(opts.dockerfile or "Dockerfile"))
            given = {k: v for k, v in opts.build_args.items() if v is not None}
            p = dfmod.plan(df, opts.target, given, dfmod.predefined_args(_host_platform(), _host_platform(),
                                                                         opts.target or ""), opts.contexts)
            run.prepare(ctx, path, df, p)
        except BaseException:
            await asyncio.to_thread(_drop_work, work)
            raise
        try:
            final = None
            async for msg in run.run():
                aux = msg.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    final = aux["ID"]
                yield msg
            if opts.output and final:
                async for chunk in run.output_tar(final):
                    yield chunk
        finally:
            await run.cleanup()
            await asyncio.to_thread(_drop_work, work)

    # --- the cache -------------------------------------------------------------------------------

    def cache_get(self, key: str) -> str | None:
        try:
            with open(os.path.join(self.root, "cache", key)) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def cache_put(self, key: str, iid: str) -> None:
        from ketch.space import write_atomic
        d = os.path.join(self.root, "cache")
        os.makedirs(d, exist_ok=True)
        write_atomic(os.path.join(d, key), iid.encode(), "the build cache", sync=False)

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())


# A context up to this size is unpacked into a tmpfs of the build's own: creating an inode costs
# ~0.7 ms on this kind of host's ext4 against ~15 us on tmpfs, and a cached build of a context of
# 3000 small files spent 2.3 s of its 2.7 s unpacking it to disk (docs/build.md, bench/build.py)
CONTEXT_TMPFS_MAX = 256 << 20


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _context_tmpfs(ctx: str, tar_size: int) -> bool:
    """Mount a tmpfs at ``ctx`` for a context of ``tar_size`` bytes when it is small enough (small
    files take a page each: room for four times the tar) and memory allows; else the disk is used."""
    from ketch.volumes import local
    room = 4 * tar_size + (64 << 20)
    if tar_size > CONTEXT_TMPFS_MAX or room > _mem_available() // 2:
        return False
    try:
        local.mount(_context_fs(room), ctx)
    except (OSError, KetchError) as e:
        log.info("build: the context on disk", extra={"error": str(e)})
        return False
    return True


def _context_fs(size: int) -> dict:
    """The context's tmpfs, as a local volume's options (the engine mounts through volumes)."""
    return {"type": "tmpfs", "device": "tmpfs", "o": f"mode=0755,size={size},nosuid,nodev"}


def _drop_work(work: str) -> None:
    """A build's work directory, its context's tmpfs unmounted first."""
    from ketch.volumes import local
    ctx = os.path.join(work, "context")
    if os.path.ismount(ctx):
        try:
            local.unmount(_context_fs(0), ctx)
        except (OSError, KetchError) as e:
            log.warning("build: unmounting the context", extra={"error": str(e)})
    shutil.rmtree(work, True)


def _host_platform() -> str:
    from ketch.oci import platform as oplatform
    p = oplatform.host()
    return f"{p.os}/{p.architecture}" + (f"/{p.variant}" if p.variant else "")


def _refuse(opts: BuildOptions) -> None:
    if opts.platform:
        want = opts.platform.split(",")
        if any(w.strip() and w.strip() != _host_platform() and w.strip() != _host_platform().split("/v")[0]
               for w in want):
            raise NotImplementedYet(f"--platform {opts.platform}: this builder builds for {_host_platform()} only")
    if opts.network not in ("", "default", "bridge", "host", "none"):
        raise NotImplementedYet(f"--network {opts.network}: a build runs on default, host or none")


class _Run:
    """One build: the plan, the stages' images, what to clean up."""

    def __init__(self, b: Builder, opts: BuildOptions, work: str):
        self.b = b
        self.opts = opts
        self.work = work
        self.containers: list[str] = []
        self.roots: list[str] = []
        self.stage_images: dict[int, str | None] = {}
        self.done: dict[int, asyncio.Future] = {}       # a stage's image, once it is built
        self.used_args: set[str] = set()
        self.step = 0
        self.total = 0
        self.vertices = 0
        self.secret_dir: str | None = None
        self.sources: list[tuple[str, dict]] = []       # --cache-from: (image ID, config)
        self.digests: dict[str, str] = {}               # the context's files' sha256, by host path

    def prepare(self, ctx: str, dockerfile_path: str, df: dfmod.Dockerfile, p: dfmod.Plan) -> None:
        self.ctx = ctx
        self.df = df
        self.plan = p
        self.matcher = dockerignore.load(ctx, dockerfile_path if os.path.basename(dockerfile_path) != "Dockerfile"
                                         else None)
        self.used_args |= p.used_args
        self.total = sum(1 + len(p.stages[i].stage.instructions) for i in p.order) + (1 if self.opts.labels else 0)
        for i in p.order:   # every RUN --mount is checked before anything runs
            for inst in p.stages[i].stage.instructions:
                if isinstance(inst, dfmod.RunInstruction):
                    for m in inst.mounts:
                        if m.type == "ssh":
                            raise NotImplementedYet(f"RUN --mount=type=ssh (line {inst.line}): ssh forwarding is "
                                                    f"not supported by this builder")
                        if m.type == "secret" and m.env:
                            runtime = os.path.basename(self.b.lifecycle.monitor.runtime_binary)
                            if runtime != "ketch-runtime":
                                raise NotImplementedYet(
                                    f"RUN --mount=type=secret,env={m.env} (line {inst.line}): a secret as a "
                                    f"variable needs ketch-runtime, which takes it from a file on the secrets "
                                    f"tmpfs ({runtime} would need the value in the step's config.json, on "
                                    f"disk); use target=")
                        if m.type == "secret" and m.required and _secret_id(m) not in self.opts.secrets:
                            raise InvalidArgument(f"secret {_secret_id(m)}: not found (required by RUN on line "
                                                  f"{inst.line}; give it with --secret id={_secret_id(m)},src=FILE)")

    # --- messages

    @staticmethod
    def out(text: str) -> dict:
        return {"stream": text}

    async def run(self) -> AsyncIterator[dict]:
        """Every stage the target needs as a task of its own, started at once: a stage waits for the
        stage its FROM names before it starts, and a `COPY --from` or `--mount from=` for the stage it
        names when the step comes (BuildKit's graph, not the classic builder's file order). Their
        messages meet in one queue; the first failure cancels the others and ends the stream."""
        p = self.plan
        async for msg in self.load_sources():
            yield msg
        loop = asyncio.get_running_loop()
        self.done = {i: loop.create_future() for i in p.order}
        parallel = any(len(w) > 1 for w in p.independent())
        queue: asyncio.Queue = asyncio.Queue(maxsize=1024)
        end = object()

        async def stage(i: int) -> None:
            error: BaseException | None = None
            try:
                async for msg in self.run_stage(p.stages[i], i == p.target, parallel):
                    await queue.put(msg)
                self.done[i].set_result(self.stage_images[i])
            except asyncio.CancelledError:
                raise
            except BaseException as e:   # noqa: BLE001 - handed to the consumer, which raises it
                error = e
            await queue.put((end, i, error))

        running = [asyncio.create_task(stage(i), name=f"build-stage-{i}") for i in p.order]
        try:
            left = len(running)
            while left:
                item = await queue.get()
                if isinstance(item, tuple) and item and item[0] is end:
                    left -= 1
                    if item[2] is not None:
                        raise item[2]
                    continue
                yield item
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for f in self.done.values():
                f.cancel()
        final = self.stage_images.get(p.target)
        if final is None:
            raise BuildError("the build produced no image (FROM scratch with nothing in it)")
        if self.opts.tags:
            await self.b.images.tag_build(final, self.opts.tags)
        unused = sorted(k for k in self.opts.build_args if k not in self.used_args and k not in dfmod.PROXY_ARGS)
        if unused:
            yield self.out(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        yield {"aux": {"ID": final}}
        if not self.opts.quiet:
            yield self.out(f"Successfully built {_short(final)}\n")
            for t in self.opts.tags:
                from ketch.oci import reference
                yield self.out(f"Successfully tagged {reference.parse(t).familiar()}\n")

    async def load_sources(self) -> AsyncIterator[dict]:
        """`--cache-from`: each image named, here or pulled when missing; one that cannot be found is
        a warning and the build goes on without it (dockerd's rule). With `--no-cache`, none is used
        and none is pulled."""
        for ref in [] if self.opts.no_cache else self.opts.cache_from:
            try:
                async for msg in self.ensure_image(ref, False):
                    yield msg
                img = await self.b.images.get_image(ref)
            except (KetchError, OSError) as e:
                yield self.out(f"[Warning] --cache-from {ref}: the image is not here and could not be pulled, "
                               f"not used: {e}\n")
                continue
            self.sources.append((img.id, img.config))

    def step_line(self, text: str) -> dict:
        self.step += 1
        return self.out(f"Step {self.step}/{self.total} : {text}\n")

    @staticmethod
    def log(text: str) -> dict:
        """A line a step printed (or a pull's status): `log` keeps it without the stage's prefix."""
        return {"stream": text, "log": text}

    async def vertex(self, state: _Stage, name: str, gen: AsyncIterator[dict]) -> AsyncIterator[dict]:
        """One step as BuildKit's vertex: Ketch's aux messages around its classic lines (`start` with
        `[stage 2/4] RUN ...`, then `done` or `cached` with the time, or `error` with BuildKit's
        words), each line tagged with the vertex's number and, when stages run at once, prefixed
        with the stage's name. The docker CLI passes aux messages without an ID by."""
        self.vertices += 1
        v = self.vertices
        quiet = self.opts.quiet
        t0 = time.monotonic()
        state.hit = False
        if not quiet:
            yield {"aux": {"ketch": {"vertex": v, "event": "start", "name": name}}}
        try:
            async for msg in gen:
                msg.setdefault("vertex", v)
                if state.prefix and "stream" in msg:
                    msg["stream"] = "".join(state.prefix + ln for ln in msg["stream"].splitlines(keepends=True))
                yield msg
        except BaseException as e:
            if not quiet and isinstance(e, KetchError):
                words = e.buildkit if isinstance(e, BuildError) else str(e)
                yield {"aux": {"ketch": {"vertex": v, "event": "error", "error": words,
                                         "elapsed": round(time.monotonic() - t0, 3)}}}
            raise
        if not quiet:
            yield {"aux": {"ketch": {"vertex": v, "event": "cached" if state.hit else "done",
                                     "elapsed": round(time.monotonic() - t0, 3)}}}

    async def stage_image(self, idx: int) -> str | None:
        """The image of stage `idx`, once its task has built it."""
        if idx not in self.done:
            raise FailedPrecondition(f"stage {idx} is not part of this build")
        return await asyncio.shield(self.done[idx])

    # --- a stage

    async def run_stage(self, ps: dfmod.PlannedStage, last: bool, parallel: bool = False) -> AsyncIterator[dict]:
        st = ps.stage
        no_cache = self.opts.no_cache or bool(st.name and st.name in [f.lower() for f in self.opts.no_cache_filter])
        label = (st.name or f"stage-{st.index}") if len(self.plan.order) > 1 else ""
        state = _Stage(None, {}, {}, no_cache=no_cache, prefix=f"[{label}] " if parallel else "")
        count = 1 + len(st.instructions) + (1 if last and self.opts.labels else 0)

        def name(pos: int, text: str) -> str:
            return f"[{label + ' ' if label else ''}{pos}/{count}] {text}"
        base: str | None = None
        if ps.base_stage is not None:
            base = await self.stage_image(ps.base_stage)
        from_text = "FROM " + (ps.base_image or st.from_.base)
        async for msg in self.vertex(state, name(1, from_text), self.from_step(ps, state, base)):
            yield msg
        for pos, inst in enumerate(st.instructions, 2):
            async for msg in self.vertex(state, name(pos, inst.original), self.step_of(state, inst)):
                yield msg
        if last and self.opts.labels:
            text = "LABEL " + " ".join(f"{k}={v}" for k, v in sorted(self.opts.labels.items()))
            async for msg in self.vertex(state, name(count, text), self.label_step(state)):
                yield msg
        self.stage_images[st.index] = state.image

    async def from_step(self, ps: dfmod.PlannedStage, state: _Stage, base: str | None) -> AsyncIterator[dict]:
        q = self.opts.quiet
        if not q:
            yield self.step_line(ps.stage.from_.original if not ps.context else
                                 f"FROM {ps.context} (the named context {ps.context} replaces this stage)")
        if ps.platform and ps.platform not in (_host_platform(), _host_platform().split("/v")[0]):
            raise NotImplementedYet(f"FROM --platform={ps.platform}: this builder builds for {_host_platform()} only")
        image = base
        nc = self.named(ps.base_image) if ps.base_image is not None else None
        ref = nc.ref if nc is not None else ps.base_image
        if nc is not None and nc.dir:   # a directory context: its files are the stage's root, no config
            state.image, state.config = None, {}
            async for msg in self.do_copy(state, buildcontexts.synthetic_copy(nc.name)):
                yield msg
            return
        if nc is not None and ref and ref.lower() == "scratch":
            ref = None   # docker-image://scratch: an empty context, as BuildKit allows
        if ref is not None:
            try:
                async for msg in self.ensure_image(ref, self.opts.pull):
                    yield msg
            except KetchError as e:
                raise NotFound(f"FROM {ref}: the base image is not here and could not be pulled: "
                               f"{e}") from None
            image = (await self.b.images.get_image(ref)).id
        config: dict = {}
        if image is not None:
            cfg = (await self.b.images.get_image(image)).run_config
            config = {k: json.loads(json.dumps(cfg[k])) for k in CONFIG_KEYS if cfg.get(k) is not None}
        if not q and image:
            yield self.out(f" ---> {_short(image)}\n")
        state.image, state.config = image, config
        triggers = config.pop("OnBuild", None) or []
        if triggers and not ps.context:   # a stage a named context replaces is not dispatched
            parsed = dfmod.parse_triggers(triggers, self.df.file)
            if not q:
                yield self.out(f"# Executing {len(parsed)} build trigger{'s' if len(parsed) > 1 else ''}\n")
            for inst in parsed:
                async for msg in self.run_step(state, inst, trigger=True):
                    yield msg

    async def step_of(self, state: _Stage, inst: dfmod.Instruction) -> AsyncIterator[dict]:
        if not self.opts.quiet:
            yield self.step_line(inst.original)
        async for msg in self.run_step(state, inst):
            yield msg

    async def label_step(self, state: _Stage) -> AsyncIterator[dict]:
        labels = self.opts.labels
        if not self.opts.quiet:
            yield self.step_line("LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())))
        state.config.setdefault("Labels", {}).update(labels)
        async for msg in self.commit_meta(state, "LABEL " + " ".join(f"{k}={v}" for k, v in sorted(labels.items()))):
            yield msg

    async def ensure_image(self, ref: str, pull: bool) -> AsyncIterator[dict]:
        if not pull:
            try:
                await self.b.images.get_image(ref)
                return
            except NotFound:
                pass
        from ketch.oci import reference
        r = reference.parse(ref)
        async for m in self.b.images.pull_image(str(r), None, None, self.opts.auth):
            if m.get("error"):
                raise NotFound(m["error"])
            if m.get("status") and not self.opts.quiet:
                line = f"{m['id']}: {m['status']}" if m.get("id") else m["status"]
                yield self.log(line + "\n")

    # --- a step

    def expand_env(self, state: _Stage) -> dict[str, str]:
        env = dict(state.args)
        env.update(_env_map(state.config.get("Env") or []))
        return env

    async def run_step(self, state: _Stage, inst: dfmod.Instruction, trigger: bool = False) \
            -> AsyncIterator[dict]:
        ex = dfmod.Expander(self.expand_env(state), self.df.escape, inst, self.df.file)
        e = inst.expanded(ex)
        self.used_args |= ex.used & set(state.args)
        cfg = state.config
        if isinstance(e, dfmod.RunInstruction):
            async for msg in self.do_run(state, e):
                yield msg
            return
        if isinstance(e, (dfmod.CopyInstruction, dfmod.AddInstruction)):
            async for msg in self.do_copy(state, e):
                yield msg
            return
        if isinstance(e, dfmod.EnvInstruction):
            env = list(cfg.get("Env") or [])
            for kv in e.pairs:
                env = _set_env(env, kv.key, kv.value)
            cfg["Env"] = env
            text = " ENV " + " ".join(f"{kv.key}={kv.value}" for kv in e.pairs)
        elif isinstance(e, dfmod.ArgInstruction):
            parts = []
            for a in e.args:
                given = self.opts.build_args.get(a.key)
                if given is not None:
                    value: str | None = given
                    self.used_args.add(a.key)
                elif a.value is not None:
                    value = a.value
                elif a.key in self.plan.global_args:
                    value = self.plan.global_args[a.key]
                else:
                    value = None
                if a.key in self.opts.build_args:
                    self.used_args.add(a.key)
                if value is not None:
                    state.args[a.key] = value
                parts.append(a.key if a.value is None else f"{a.key}={a.value}")
            text = " ARG " + " ".join(parts)
        elif isinstance(e, dfmod.LabelInstruction):
            labels = dict(cfg.get("Labels") or {})
            for kv in e.pairs:
                labels[kv.key] = kv.value
            cfg["Labels"] = labels
            text = " LABEL " + " ".join(f"{kv.key}={kv.value}" for kv in e.pairs)
        elif isinstance(e, dfmod.ExposeInstruction):
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in _ports(e.ports):
                ports[p] = {}
            cfg["ExposedPorts"] = ports
            text = " EXPOSE " + " ".join(_ports(e.ports))
        elif isinstance(e, dfmod.WorkdirInstruction):
            cfg["WorkingDir"] = posixpath.normpath(posixpath.join(cfg.get("WorkingDir") or "/", e.path))
            text = "WORKDIR " + cfg["WorkingDir"]
        elif isinstance(e, dfmod.UserInstruction):
            cfg["User"] = e.user
            text = " USER " + e.user
        elif isinstance(e, dfmod.VolumeInstruction):
            vols = dict(cfg.get("Volumes") or {})
            for v in e.volumes:
                if not v.strip():
                    raise InvalidArgument("VOLUME specified can not be an empty string")
                vols[v] = {}
            cfg["Volumes"] = vols
            text = " VOLUME " + _go_quote_list(e.volumes).replace('"', "")
        elif isinstance(e, dfmod.ShellInstruction):
            cfg["Shell"] = list(e.shell)
            text = " SHELL " + _go_quote_list(e.shell)
        elif isinstance(e, dfmod.StopSignalInstruction):
            cfg["StopSignal"] = e.signal
            text = " STOPSIGNAL " + e.signal
        elif isinstance(e, dfmod.HealthcheckInstruction):
            hc: dict[str, Any] = {"Test": list(e.test)}
            for hk, hv in (("Interval", e.interval), ("Timeout", e.timeout), ("StartPeriod", e.start_period),
                           ("StartInterval", e.start_interval), ("Retries", e.retries)):
                if hv:
                    hc[hk] = hv
            cfg["Healthcheck"] = hc
            text = " HEALTHCHECK " + _go_quote_list(e.test)
        elif isinstance(e, (dfmod.CmdInstruction, dfmod.EntrypointInstruction)):
            argv = (list(cfg.get("Shell") or DEFAULT_SHELL) + e.cmd) if e.prepend_shell else list(e.cmd)
            if isinstance(e, dfmod.CmdInstruction):
                cfg["Cmd"] = argv
                state.cmd_set = True
                text = " CMD " + _go_quote_list(argv)
            else:
                cfg["Entrypoint"] = argv
                if not state.cmd_set:
                    cfg.pop("Cmd", None)   # Docker: an ENTRYPOINT drops the base image's CMD
                text = " ENTRYPOINT " + _go_quote_list(argv)
            if e.prepend_shell:
                cfg["ArgsEscaped"] = True
            else:
                cfg.pop("ArgsEscaped", None)
        elif isinstance(e, dfmod.OnbuildInstruction):
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [e.expression]
            text = " ONBUILD " + e.expression
        elif isinstance(e, dfmod.MaintainerInstruction):
            state.author = e.maintainer
            text = " MAINTAINER " + e.maintainer
        else:
            raise NotImplementedYet(f"{inst.name}: not supported by this builder")
        async for msg in self.commit_meta(state, text):
            yield msg

    async def commit_meta(self, state: _Stage, text: str) -> AsyncIterator[dict]:
        """A step that changes the config only: an image with no new layer (`empty_layer`)."""
        created_by = _NOP + text if text else ""
        key = _key("meta", state.image, state.config, created_by, state.author)
        hit = await self.cached(state, key)
        if not hit and text:
            hit = await self.cached_from(state, key, self._entry(state, created_by), layer=False)
        if hit:
            if not self.opts.quiet:
                yield self.out(" ---> Using cache\n")
        else:
            hit = await self.b.images.commit_step(None, state.image, run_config=dict(state.config),
                                                  history=[self._entry(state, created_by)] if text else [],
                                                  parent=state.image)
            self.b.cache_put(key, hit)
        state.image = hit
        if not self.opts.quiet:
            yield self.out(f" ---> {_short(hit)}\n")

    def _entry(self, state: _Stage, created_by: str, comment: str = "") -> dict:
        entry = {"created_by": created_by}
        if state.author:
            entry["author"] = state.author
        if comment:
            entry["comment"] = comment
        return entry

    async def use_cache(self, state: _Stage, key: str) -> bool:
        """A hit becomes the stage's image."""
        hit = await self.cached(state, key)
        if hit:
            state.image = hit
        return hit is not None

    async def use_cache_from(self, state: _Stage, key: str, entry: dict) -> bool:
        """A `--cache-from` hit becomes the stage's image."""
        hit = await self.cached_from(state, key, entry)
        if hit:
            state.image = hit
        return hit is not None

    async def cached_from(self, state: _Stage, key: str, entry: dict, layer: bool = True) -> str | None:
        """`--cache-from`, as dockerd's classic builder: a source image whose history entries and
        layer diffIDs begin with exactly the stage's image's, and whose next entry has the words this
        step writes (`created_by`, the author, and the comment: for RUN and COPY the digest of what
        the step reads, so a COPY whose sources changed misses); a step that makes no layer only
        matches an `empty_layer` entry. The step's image is then made of that entry and its layer
        (shared by digest, nothing run) with this build's config, and kept in the cache under
        ``key``. A pulled image carries no intermediate images and no cache records: this is how it
        seeds the cache."""
        if state.no_cache or not self.sources:
            return None
        cfg = (await self.b.images.get_image(state.image)).config if state.image else {}
        hist = cfg.get("history") or []
        diffs = (cfg.get("rootfs") or {}).get("diff_ids") or []
        n = len(hist)
        for sid, scfg in self.sources:
            shist = scfg.get("history") or []
            if len(shist) <= n or shist[:n] != hist \
                    or ((scfg.get("rootfs") or {}).get("diff_ids") or [])[:len(diffs)] != diffs:
                continue
            cand = shist[n]
            if any((cand.get(k) or "") != (entry.get(k) or "") for k in ("created_by", "comment", "author")) \
                    or (not layer and not cand.get("empty_layer")):
                continue
            try:
                iid = await self.b.images.commit_cached_step(sid, n, state.image, run_config=dict(state.config),
                                                             parent=state.image)
            except (NotFound, FailedPrecondition) as e:
                log.warning("build: --cache-from image not usable", extra={"image": sid, "error": str(e)})
                continue
            self.b.cache_put(key, iid)
            state.hit = True
            return iid
        return None

    def cache_msgs(self, state: _Stage) -> list[dict]:
        if self.opts.quiet or state.image is None:
            return []
        return [self.out(" ---> Using cache\n"), self.out(f" ---> {_short(state.image)}\n")]

    async def cached(self, state: _Stage, key: str) -> str | None:
        if state.no_cache:
            return None
        iid = self.b.cache_get(key)
        if iid is None:
            return None
        try:
            await self.b.images.get_image(iid)
        except (NotFound, InvalidArgument):
            return None
        state.hit = True
        return iid

    # --- RUN

    def run_args(self, state: _Stage) -> tuple[list[str], list[str]]:
        """(the env of a RUN: the build args in scope under the config's Env, the `|N K=V` history prefix)."""
        env = list(state.config.get("Env") or [])
        names = {e.partition("=")[0] for e in env}
        args = [f"{k}={v}" for k, v in sorted(state.args.items())]
        for a in args:
            if a.partition("=")[0] not in names:
                env.append(a)
        shown = [a for a in args if a.partition("=")[0] not in dfmod.PROXY_ARGS]
        return env, ([f"|{len(shown)}", *shown] if shown else [])

    async def do_run(self, state: _Stage, e: dfmod.RunInstruction) -> AsyncIterator[dict]:
        if state.image is None:
            raise BuildError("RUN: a stage FROM scratch has no shell to run it in (COPY something first)")
        hd = e.heredoc_file()
        if e.prepend_shell or e.heredocs:
            shell = list(state.config.get("Shell") or DEFAULT_SHELL)
            argv = shell + e.script() if not hd else [f"/dev/pipes/{hd.name}"]
        else:
            argv = list(e.cmd)
        env, prefix = self.run_args(state)
        network = e.network if e.network != "default" else (self.opts.network or "default")
        mounts_desc = [m.__dict__ for m in e.mounts]
        # what each bind mount shows, so a change of it is a miss (its files' digest, or its image)
        binds = [await self.bind_identity(m) for m in e.mounts if m.type == "bind"]
        created_by = " ".join(prefix + argv)
        key = _key("run", state.image, state.config, created_by, network if network != "default" else "",
                   mounts_desc, hd.content if hd else None, *([binds] if binds else []))
        comment = _inputs("run", state.config, network if network != "default" else "", mounts_desc,
                          hd.content if hd else None, binds)
        if await self.use_cache(state, key) or await self.use_cache_from(state, key,
                                                                         self._entry(state, created_by, comment)):
            for msg in self.cache_msgs(state):
                yield msg
            return
        mounts, locks, cleanup = await self.run_mounts(e, state, hd)
        try:
            for lk in locks:
                await lk.acquire()
            try:
                async for msg in self._run_container(state, argv, env, network, mounts, created_by, key, comment):
                    yield msg
            finally:
                for lk in locks:
                    lk.release()
        finally:
            for fn in cleanup:
                await fn()

    async def bind_identity(self, m: dfmod.Mount) -> str | None:
        """A bind mount's content for the RUN's cache key: the digest of the files and metadata it shows
        (as COPY's, no mtimes) from the context or a directory context, or the ID of the stage's or
        image's image it is from."""
        nc = self.named(m.from_) if m.from_ else None
        if m.from_ and (nc is None or not nc.dir):
            return (await self.from_image(m.from_))[0]
        root = buildcopy.SourceRoot(nc.dir, nc.matcher, nc.label) if nc is not None else \
            buildcopy.SourceRoot(self.ctx, self.matcher)

        def digest() -> str | None:
            try:
                return buildcopy.digest_sources(buildcopy.resolve_sources(root, [m.source or "."], add=False))
            except KetchError:
                return None   # not there: the mount says so when it is made
        return await asyncio.to_thread(digest)

    async def _run_container(self, state: _Stage, argv: list[str], env: list[str], network: str,
                             mounts: list[dict], created_by: str, key: str, comment: str = "") \
            -> AsyncIterator[dict]:
        mode = {"default": "", "bridge": "", "host": "host", "none": "none"}[network]
        env_files = [m["Source"] for m in mounts if m["Type"] == SECRET_ENV]
        mounts = [m for m in mounts if m["Type"] != SECRET_ENV]
        hc: dict[str, Any] = {"Mounts": mounts, "ExtraHosts": list(self.opts.extra_hosts) or None}
        if mode:
            hc["NetworkMode"] = mode
        if self.opts.shm_size:
            hc["ShmSize"] = self.opts.shm_size
        if self.opts.ulimits:
            hc["Ulimits"] = self.opts.ulimits
        body = {"Image": state.image, "Cmd": argv, "Entrypoint": [""], "Env": env,
                "User": state.config.get("User") or "", "WorkingDir": state.config.get("WorkingDir") or "",
                "AttachStdout": True, "AttachStderr": True, "HostConfig": hc,
                "Labels": {}}
        req = self.b.validate(body)
        if env_files:   # after validate, which refuses the reserved annotation from clients
            from ketch.runtime.config import ENV_FILE_ANNOTATION
            req.host_config["Annotations"] = {ENV_FILE_ANNOTATION: env_files[0]}
        cid, _ = await self.b.creator.create(None, req)
        self.containers.append(cid)
        if not self.opts.quiet:
            yield self.out(f" ---> Running in {cid[:12]}\n")
        fut = self.b.lifecycle.wait_future(cid, "next-exit")
        await self.b.lifecycle.start(cid)
        _, gen = self.b.queries.logs(cid, follow=True, stdout=True, stderr=True)
        partial: dict[Any, str] = {}   # whole lines only, per stream, so each can carry its stage's name
        async for stream, data in gen:
            if self.opts.quiet:
                continue
            text = partial.pop(stream, "") + data.decode("utf-8", errors="replace")
            lines = text.splitlines(keepends=True)
            if lines and not lines[-1].endswith(("\n", "\r")) and len(lines[-1]) < 65536:
                partial[stream] = lines.pop()
            for line in lines:
                yield self.log(line)
        for rest in partial.values():
            yield self.log(rest)
        code = await fut
        if code != 0:
            shown = json.dumps(" ".join(argv))   # BuildKit's %q of the joined argv
            raise BuildError(f"The command '{' '.join(argv)}' returned a non-zero code: {code}", code,
                             f"process {shown} did not complete successfully: exit code: {code}")
        targets = tuple(m["Target"] for m in mounts)
        iid = await self.b.images.commit_step(cid, state.image, run_config=dict(state.config),
                                              history=[self._entry(state, created_by, comment)],
                                              parent=state.image, placeholders=PLACEHOLDERS + targets)
        self.b.cache_put(key, iid)
        if self.opts.rm or self.opts.forcerm:
            if not self.opts.quiet:
                yield self.out(f"Removing intermediate container {cid[:12]}\n")
            await self._remove_container(cid)
        else:
            self.containers.remove(cid)
        state.image = iid
        if not self.opts.quiet:
            yield self.out(f" ---> {_short(iid)}\n")

    async def _remove_container(self, cid: str) -> None:
        try:
            await self.b.lifecycle.remove(cid, force=True, volumes=True)
        except NotFound:
            pass
        if cid in self.containers:
            self.containers.remove(cid)

    async def run_mounts(self, e: dfmod.RunInstruction, state: _Stage, hd) -> tuple[list[dict], list, list]:
        mounts: list[dict] = []
        locks: list[asyncio.Lock] = []
        cleanup: list = []
        env_entries: list[bytes] = []
        for m in e.mounts:
            target = m.target if m.target.startswith("/") else posixpath.join(state.config.get("WorkingDir") or "/",
                                                                              m.target)
            if m.type == "cache":
                if m.from_:
                    raise NotImplementedYet(f"RUN --mount=type=cache,from={m.from_}: a cache seeded from a stage "
                                            f"is not supported by this builder")
                cid = m.cache_id or target
                d = os.path.join(self.b.root, "cache-mounts", hashlib.sha256(cid.encode()).hexdigest()[:32])
                if not os.path.isdir(d):
                    os.makedirs(d, exist_ok=True)
                    os.chmod(d, m.mode if m.mode is not None else 0o755)
                    os.chown(d, m.uid or 0, m.gid or 0)
                from ketch.engine.buildcache import note_mount_use
                await asyncio.to_thread(note_mount_use, d, cid, target)   # system df's UsageCount, LastUsedAt
                if m.sharing in ("locked", "private"):
                    locks.append(self.b.lock(d))
                mounts.append({"Type": "bind", "Source": d, "Target": target, "ReadOnly": False})
            elif m.type == "tmpfs":
                t: dict[str, Any] = {"Type": "tmpfs", "Target": target}
                if m.size_limit:
                    t["TmpfsOptions"] = {"SizeBytes": m.size_limit}
                mounts.append(t)
            elif m.type == "bind":
                src_root, done = await self.source_root(m.from_) if m.from_ else (
                    buildcopy.SourceRoot(self.ctx, self.matcher), None)
                if done is not None:
                    cleanup.append(done)
                src = src_root.host_path(posixpath.normpath("/" + (m.source or "/")).lstrip("/"))
                if not os.path.exists(src):
                    raise BuildError(f"RUN --mount=type=bind,source={m.source}: not found in "
                                     f"{m.from_ or 'the build context'}")
                if not m.readonly:   # rw: the step's writes go to a copy and are discarded, as BuildKit
                    copy = os.path.join(self.work, f"bind-{uuid.uuid4().hex[:8]}")
                    await asyncio.to_thread(_copy_any, src, copy)
                    src = copy
                mounts.append({"Type": "bind", "Source": src, "Target": target, "ReadOnly": m.readonly})
            elif m.type == "secret":
                sid = _secret_id(m)
                value = self.opts.secrets.get(sid)
                if value is None:
                    if m.required:
                        raise BuildError(f"secret {sid}: not found (give it with --secret id={sid},src=FILE)")
                    continue   # BuildKit: a secret that is not given and not required is not mounted
                if m.env:
                    env_entries.append(m.env.encode() + b"=" + value)
                    if not m.target:
                        continue   # BuildKit: env= without target= is the variable only, no file
                owner = await self.secret_owner(m, state)
                path = await asyncio.to_thread(self.secret_file, value, m, owner)
                cleanup.append(_remover(path))
                mounts.append({"Type": "bind", "Source": path, "ReadOnly": True,
                               "Target": m.target if m.target.startswith("/") else (
                                   target if m.target else f"/run/secrets/{sid}")})
            else:
                raise NotImplementedYet(f"RUN --mount=type={m.type}: not supported by this builder")
        if env_entries:
            path = await asyncio.to_thread(self.secret_env_file, env_entries)
            cleanup.append(_remover(path))
            mounts.append({"Type": SECRET_ENV, "Source": path})
        if hd is not None:
            f = os.path.join(self.work, f"heredoc-{uuid.uuid4().hex[:8]}")
            with open(f, "w") as out:
                out.write(hd.content)
            os.chmod(f, 0o755)
            mounts.append({"Type": "bind", "Source": f, "Target": f"/dev/pipes/{hd.name}", "ReadOnly": True})
        return mounts, locks, cleanup

    async def secret_owner(self, m: dfmod.Mount, state: _Stage) -> tuple[int, int]:
        """Who owns a secret's file: uid=/gid=, else the step's USER (a name, or a uid without a group,
        resolved in the step image's /etc/passwd and /etc/group as the step's process is), else 0:0."""
        user = (state.config.get("User") or "").strip()
        if (m.uid is not None and m.gid is not None) or not user:
            return (m.uid or 0, m.gid or 0)
        name, _, group = user.partition(":")
        if name.isdigit() and group.isdigit():
            uid, gid = int(name), int(group)
        else:
            from ketch.engine.spec import resolve_user
            key = f"build-{uuid.uuid4().hex[:16]}"
            await self.b.images.create_build_root(state.image, key)
            self.roots.append(key)
            try:
                root = await self.b.images.mount_rootfs(key)
                u = await asyncio.to_thread(resolve_user, root, user)
            finally:
                await self.b.images.remove_rootfs(key)
                self.roots.remove(key)
            uid, gid = u["uid"], u["gid"]
        return (m.uid if m.uid is not None else uid, m.gid if m.gid is not None else gid)

    def secrets_tmpfs(self) -> str:
        """The build's tmpfs for secrets (0700, mounted at the first secret, unmounted by cleanup)."""
        from ketch.volumes import local
        if self.secret_dir is None:
            d = os.path.join(self.work, "secrets")
            os.makedirs(d, mode=0o700)
            size = sum(len(v) for v in self.opts.secrets.values()) * 3 + (1 << 20)
            local.mount(_secrets_fs(size), d)
            self.secret_dir = d
        return self.secret_dir

    def secret_env_file(self, entries: list[bytes]) -> str:
        """A step's secret variables (`env=`): NUL-separated KEY=VALUE entries in a root-only file on the
        secrets tmpfs, which ketch-runtime reads when it creates the step's container and gives to its
        init in memory (ketch.runtime.config.ENV_FILE_ANNOTATION): the value is in no config.json, no
        container record and no runtime state, only in the step's process environment."""
        from ketch.runtime.config import encode_env_file
        path = os.path.join(self.secrets_tmpfs(), f"env-{uuid.uuid4().hex}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, encode_env_file(entries))
        finally:
            os.close(fd)
        return path

    def secret_file(self, value: bytes, m: dfmod.Mount, owner: tuple[int, int]) -> str:
        """A secret as a file on the build's own tmpfs (mounted at the first secret, 0700, never in a
        layer: it is bind-mounted over the step's root), owned by ``owner`` with mode= (0400)."""
        uid, gid = owner
        path = os.path.join(self.secrets_tmpfs(), uuid.uuid4().hex)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, value)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, m.mode if m.mode is not None else 0o400)
        finally:
            os.close(fd)
        return path

    # --- COPY / ADD

    def named(self, ref: str) -> buildcontexts.NamedContext | None:
        """The named context (`--build-context`) a FROM or a `--from` names, compared as BuildKit does."""
        if not self.opts.contexts or ref.isdigit():
            return None
        from ketch.oci import reference
        return self.opts.contexts.get(reference.shortest(ref))

    async def from_image(self, ref: str) -> tuple[str | None, str]:
        """The image a `--from` names that is not a directory context (a named image context, a stage by
        name or index, or an image, pulled when missing), and how to call it."""
        nc = self.named(ref)
        if nc is not None:
            if nc.ref.lower() == "scratch":
                return None, nc.label
            try:
                async for _ in self.ensure_image(nc.ref, False):
                    pass
            except KetchError as e:
                raise NotFound(f"--from={ref}: the image {nc.ref} of the {nc.label} is not here and could not "
                               f"be pulled: {e}") from None
            return (await self.b.images.get_image(nc.ref)).id, nc.label
        names = {s.stage.name: s.stage.index for s in self.plan.stages if s.stage.name}
        if ref.isdigit() or ref.lower() in names:
            idx = int(ref) if ref.isdigit() else names[ref.lower()]
            return await self.stage_image(idx), f"stage {ref}"
        try:
            async for _ in self.ensure_image(ref, False):
                pass
        except KetchError as e:
            stages = ", ".join(sorted(names)) or "none is named"
            raise NotFound(f"--from={ref}: no stage of this Dockerfile is named {ref!r} (stages: {stages}), "
                           f"and the image {ref} is not here and could not be pulled: {e}") from None
        return (await self.b.images.get_image(ref)).id, f"image {ref}"

    async def source_root(self, ref: str):
        """The root a `--from` names (a directory context as it is; a stage, an image or an image
        context mounted), and its cleanup (None for a directory)."""
        nc = self.named(ref)
        if nc is not None and nc.dir:
            return buildcopy.SourceRoot(nc.dir, nc.matcher, nc.label), None
        image, what = await self.from_image(ref)
        key = f"build-{uuid.uuid4().hex[:16]}"
        await self.b.images.create_build_root(image, key)
        self.roots.append(key)
        root = await self.b.images.mount_rootfs(key)

        async def done() -> None:
            await self.b.images.remove_rootfs(key)
            if key in self.roots:
                self.roots.remove(key)
        return buildcopy.SourceRoot(root, None, what), done

    async def do_copy(self, state: _Stage, e: dfmod.CopyInstruction | dfmod.AddInstruction) -> AsyncIterator[dict]:
        add = isinstance(e, dfmod.AddInstruction)
        verb = "ADD" if add else "COPY"
        urls: list[str] = []    # ADD's http(s) sources, downloaded here (buildurl)
        checksum = ""
        if isinstance(e, dfmod.AddInstruction):
            if e.keep_git_dir is not None:
                raise NotImplementedYet("ADD --keep-git-dir: only for git URLs, which this builder does not fetch")
            for name in e.sources:
                buildurl.refuse_git(name)
            urls = [name for name in e.sources if buildurl.is_http(name)]
            if urls and e.parents:
                raise InvalidArgument(f"ADD --parents {urls[0]}: --parents is only for local sources")
            if e.checksum:
                checksum = buildurl.parse_checksum(e.checksum)
                if len(e.sources) != 1 or not urls:
                    raise InvalidArgument(f"ADD --checksum={e.checksum}: only for a single http(s) URL source")
        names = {u: buildurl.file_name(u) for u in urls}
        for u in urls:
            if not names[u] and (e.dest.endswith("/") or len(e.sources) > 1):
                raise InvalidArgument(f"ADD {u}: cannot determine a file name from the URL: name the destination file")
        local = [name for name in e.sources if name not in names]
        chmod = buildcopy.parse_chmod(e.chmod)
        from_ = e.from_ if isinstance(e, dfmod.CopyInstruction) else ""
        done = None
        if from_:
            src_root, done = await self.source_root(from_)
        else:
            src_root = buildcopy.SourceRoot(self.ctx, self.matcher)
        key_name = f"build-{uuid.uuid4().hex[:16]}"
        fetched: dict[str, buildurl.Fetched] = {}
        downloads = os.path.join(self.work, f"add-{uuid.uuid4().hex[:16]}")

        async def fetch(url: str) -> None:
            if (self.opts.network or "default") == "none":
                raise BuildError(f"ADD {url}: network is disabled for this build (--network none)")
            os.makedirs(downloads, mode=0o700, exist_ok=True)
            try:
                fetched[url] = await buildurl.download(url, os.path.join(downloads, str(len(fetched))),
                                                       checksum=checksum)
            except buildurl.FetchError as ex:
                raise BuildError(str(ex)) from None
        parents = bool(getattr(e, "parents", False))
        try:
            sources = await asyncio.to_thread(
                buildcopy.resolve_sources, src_root, local, add=add, excludes=e.excludes,
                unpack=getattr(e, "unpack", None), verb=verb, parents=parents) if local else []
            for c in e.contents:
                sources.append(buildcopy.Source(c.path, [buildcopy.Entry(c.path, None, None, c.data.encode())],
                                                False))
            digest = await asyncio.to_thread(buildcopy.digest_sources, sources, None if from_ else self.digests)
            unpack_urls = getattr(e, "unpack", None) is True   # --unpack=true: a remote tar unpacked
            if urls:   # the key has what was downloaded (or, with --checksum, what must come)
                if not checksum:
                    for u in urls:
                        await fetch(u)
                digest = _key(digest, [(u, names[u], fetched[u].sha256 if u in fetched else checksum)
                                       for u in urls], *(["unpack"] if unpack_urls else []))
            kind = "dir" if any(s.is_dir for s in sources) or len(sources) + len(urls) > 1 else "file"
            dest_text = e.dest
            created_by = f"{_NOP}{verb} {kind}:{digest} in {dest_text} "
            flags = ["parents"] if parents else []
            key = _key(verb, state.image, state.config, created_by, e.chown, e.chmod, e.link, e.excludes, *flags)
            comment = _inputs(verb, state.config, e.chown, e.chmod, e.link, e.excludes, *flags)
            if await self.use_cache(state, key) or await self.use_cache_from(state, key,
                                                                             self._entry(state, created_by, comment)):
                for msg in self.cache_msgs(state):
                    yield msg
                return
            for u in urls:
                if u not in fetched:
                    await fetch(u)
                path = fetched[u].path
                st = os.lstat(path)
                archive = path if unpack_urls and await asyncio.to_thread(buildcopy.is_archive, path) else None
                sources.append(buildcopy.Source(u, [buildcopy.Entry(names[u] or "index", path, st)], False,
                                                archive=archive))
            order = {name: i for i, name in reversed(list(enumerate(e.sources)))}
            sources.sort(key=lambda s: len(order) if s.entries and s.entries[0].data is not None
                         else order.get(s.name, len(order)))   # as named, heredocs last
            await self.b.images.create_build_root(state.image, key_name)
            self.roots.append(key_name)
            root = await self.b.images.mount_rootfs(key_name)
            upper = await self.b.images.build_root_upper(key_name)
            workdir = state.config.get("WorkingDir") or "/"
            # the layer this COPY made last time on the same parent: its unchanged files are linked
            prev_key = _key("copy-layer", verb, state.image, e.sources, from_, e.dest, e.chown, e.chmod, e.excludes)
            prev = await self.b.images.step_layer_dir(self.b.cache_get(prev_key), state.image)
            owner: tuple[int, int] | None = None
            placed: list[tuple[str, buildcopy.Entry]] = []
            links: dict[str, tuple[int, int]] = {}

            def write() -> None:
                from ketch.archive import extract_archive
                nonlocal owner, placed, links
                now = time.time()
                owner = buildcopy.parse_chown(e.chown, root)
                placed, archives, dirs = buildcopy.plan_copy(root, sources, e.dest, workdir, verb=verb)
                if prev is not None and not archives:
                    links = buildcopy.linkable(placed, prev, owner, chmod)
                with buildcopy.write_tar([pe for pe in placed if pe[0] not in links], dirs, owner, chmod, now) as tar:
                    extract_archive(tar, root, "")
                late = buildcopy.unreachable(upper, links) if links else set()
                if late:
                    # a parent only the mounted root shows (through a symlink, or a lower layer's):
                    # those files go through it after all, with the directories' entries again
                    links = {p: k for p, k in links.items() if p not in late}
                    again = [(p, en) for p, en in placed
                             if p in late or (en.st is not None and stat.S_ISDIR(en.st.st_mode))]
                    with buildcopy.write_tar(again, dirs, owner, chmod, now) as tar:
                        extract_archive(tar, root, "")
                for archive, dest in archives:
                    with open(archive, "rb") as f:
                        extract_archive(f, root, dest)
            try:
                await asyncio.to_thread(write)
            except (OSError, KetchError) as ex:
                raise BuildError(f"{verb} failed: {ex}") from None
            await self.b.images.unmount_rootfs(key_name)
            if links and prev is not None:
                try:
                    await asyncio.to_thread(buildcopy.link_into, upper, prev, links, placed, owner, chmod)
                except (OSError, KetchError) as ex:
                    raise BuildError(f"{verb} failed: {ex}") from None
            # unmounted and removed after: its upper dir becomes the layer, no copy of what COPY wrote
            iid = await self.b.images.commit_step(key_name, state.image, run_config=dict(state.config),
                                                  history=[self._entry(state, created_by, comment)],
                                                  parent=state.image, in_place=True)
            self.b.cache_put(key, iid)
            self.b.cache_put(prev_key, iid)
            state.image = iid
            if not self.opts.quiet:
                yield self.out(f" ---> {_short(iid)}\n")
        finally:
            if key_name in self.roots:
                await self.b.images.remove_rootfs(key_name)
                self.roots.remove(key_name)
            if done is not None:
                await done()
            if os.path.isdir(downloads):
                shutil.rmtree(downloads, ignore_errors=True)

    async def output_tar(self, final: str) -> AsyncIterator[Any]:
        """`--output type=local|tar`: `{"aux": {"Output": {"Type": "tar"}}}`, then the final image's
        root as a plain tar (bytes, not messages) to the end of the answer. The image stays untagged
        (build cache: `builder prune` frees it)."""
        from ketch.engine.changes import tree_tar
        key = f"build-{uuid.uuid4().hex[:16]}"
        await self.b.images.create_build_root(final, key)
        self.roots.append(key)
        root = await self.b.images.mount_rootfs(key)
        yield {"aux": {"Output": {"Type": "tar", "ID": final}}}
        async for chunk in tree_tar(root):
            yield chunk

    async def cleanup(self) -> None:
        """Every container and root this build made and did not keep (also after a failure)."""
        for cid in list(self.containers):
            try:
                await self._remove_container(cid)
            except KetchError as e:
                log.warning("build: removing an intermediate container", extra={"container": cid, "error": str(e)})
        for key in list(self.roots):
            try:
                await self.b.images.remove_rootfs(key)
            except KetchError as e:
                log.warning("build: removing a step's root", extra={"key": key, "error": str(e)})
        self.roots.clear()
        if self.secret_dir is not None:
            from ketch.volumes import local
            try:
                local.unmount(_secrets_fs(0), self.secret_dir)
            except OSError as e:
                log.warning("build: unmounting the secrets", extra={"error": str(e)})
            self.secret_dir = None


# run_mounts' entry for a step's secret variables (the file secret_env_file wrote), which
# _run_container turns into the runtime's annotation instead of a mount
SECRET_ENV = "ketch-secret-env"


def _secrets_fs(size: int) -> dict:
    """The build's tmpfs for secrets, as a local volume's options (the engine mounts through volumes)."""
    return {"type": "tmpfs", "device": "tmpfs", "o": f"mode=0700,size={size},nosuid,nodev,noexec"}


def _secret_id(m: dfmod.Mount) -> str:
    """BuildKit's id of a secret mount: id=, else source=, else the target's base name."""
    return m.cache_id or m.source or posixpath.basename(m.target)


def _remover(path: str):
    async def remove() -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return remove


def _copy_any(src: str, dst: str) -> None:
    if os.path.isdir(src) and not os.path.islink(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def _output(outputs: Any) -> str:
    """The `outputs` query (BuildKit's exporter entries, `[{"Type": "local"|"tar"|"image", "Attrs": {}}]`):
    "tar" when the final root goes to the client (`local` and `tar` travel the same way: the client
    unpacks or writes it, the destination is the client's), "" for an image."""
    if not outputs:
        return ""
    if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        raise InvalidArgument("outputs: one exporter entry ({\"Type\": \"local\"|\"tar\"|\"image\"}) is supported")
    kind = str(outputs[0].get("Type") or outputs[0].get("type") or "").lower()
    if kind in ("image", "docker", "moby"):
        return ""
    if kind in ("local", "tar"):
        return "tar"
    raise NotImplementedYet(f"--output type={kind}: this builder writes an image, a local directory or a tar")


def _cache_from(refs: Any) -> list[str]:
    """`cachefrom`: a JSON array of image references (the docker CLI's `--cache-from`, docker-py's
    `cache_from`), each checked now: a malformed one is a 400, a missing one a warning later."""
    from ketch.oci import reference
    if refs is None:
        return []
    if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
        raise InvalidArgument("invalid cachefrom value: a JSON array of image references")
    for r in refs:
        reference.parse(r)
    return list(dict.fromkeys(refs))


def build_options(query: Mapping[str, Any], getall: Callable[[str], list[str]]) -> BuildOptions:
    """POST /build's query as BuildOptions; what the classic builder has and this one does not is refused."""
    def flag(name: str, default: bool = False) -> bool:
        v = query.get(name)
        if v is None or v == "":
            return default
        return str(v).lower() in ("1", "true", "yes")

    def js(name: str, default: Any) -> Any:
        v = query.get(name)
        if not v:
            return default
        try:
            return json.loads(v)
        except ValueError:
            raise InvalidArgument(f"invalid {name} value: {v}") from None
    for name, what in (("remote", "a remote context (git or URL)"),
                       ("squash", "--squash"), ("isolation", "--isolation"),
                       ("session", "a BuildKit session")):
        v = query.get(name)
        if v and v not in ("[]", "default", "null"):
            raise NotImplementedYet(f"{what}: not supported by this builder")
    if query.get("version") == "2":
        raise NotImplementedYet("BuildKit (version=2): this daemon has the classic builder only "
                                "(DOCKER_BUILDKIT=0)")
    for name in ("cpusetcpus", "cpusetmems", "cpushares", "cpuquota", "cpuperiod", "memory", "memswap"):
        v = query.get(name)
        if v and v not in ("0", "", "-1"):
            raise NotImplementedYet(f"{name}: resource limits of build steps are not supported by this builder")
    tags = [t for t in getall("t") if t]
    output = _output(js("outputs", []))
    if output:
        tags = []   # the filesystem instead of an image: nothing is tagged
    from ketch.oci import reference
    for t in tags:
        r = reference.parse(t)
        if r.digest:
            raise InvalidArgument(f"invalid reference format: {t}: a build cannot be tagged by digest")
    ulimits = js("ulimits", [])
    hosts = query.get("extrahosts") or ""
    extra = [h for h in hosts.split(",") if h] if hosts and not hosts.startswith("[") else js("extrahosts", [])
    shm = query.get("shmsize") or "0"
    try:
        shm_size = int(shm)
    except ValueError:
        raise InvalidArgument(f"invalid shmsize value: {shm}") from None
    labels = js("labels", {})
    args = js("buildargs", {})
    if not isinstance(args, dict) or not isinstance(labels, dict):
        raise InvalidArgument("buildargs and labels must be JSON objects")
    return BuildOptions(
        dockerfile=query.get("dockerfile") or "Dockerfile", tags=tags, build_args=args,
        cache_from=_cache_from(js("cachefrom", [])),
        target=query.get("target") or None, no_cache=flag("nocache"),
        no_cache_filter=js("nocachefilter", []), pull=flag("pull"), rm=flag("rm", True), forcerm=flag("forcerm"),
        labels=labels, network=query.get("networkmode") or "default", extra_hosts=extra, shm_size=shm_size,
        ulimits=ulimits or [], quiet=flag("q"), output=output, platform=query.get("platform") or "",
        contexts=buildcontexts.parse(query.get("ketchcontexts")))
