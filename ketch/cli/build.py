"""`ketch build`: a context and a Dockerfile to ketchd's POST /build, the classic builder's stream shown.

    ketch build [-t NAME:TAG]... [-f FILE|-] [--build-arg K[=V]]... [--target STAGE] [--no-cache]
                [--no-cache-filter STAGE]... [--pull] [--label K=V]... [--network default|host|none]
                [--add-host HOST:IP]... [--shm-size N] [--ulimit NAME=SOFT[:HARD]]... [--iidfile F] [-q]
                [--progress auto|plain|tty] [--secret id=ID[,src=FILE|,env=VAR][,type=file|env]]...
                [--build-context NAME=DIR|docker-image://REF]... [--cache-from IMAGE]... [-o OUTPUT] CONTEXT

CONTEXT is a directory (tarred here, `.dockerignore` applied by ketch.build.dockerignore, the
Dockerfile and the ignore file always sent, as the docker CLI sends them), `-` (stdin: a tar,
or a Dockerfile alone for a build without context) or a local tar file. `-f` names the
Dockerfile (in the context, outside it, or `-` for stdin: then it travels in the tar under a
name of its own, as the docker CLI does it). A `--build-arg K` without a value takes K from the
environment (left out when unset). The exit status is the failing RUN's, else 1 on an error.
`-o type=local,dest=DIR` / `type=tar,dest=FILE|-` (buildx's shorthands `-o DIR`, `-o -`): the final
stage's root, streamed by the daemon after the build's last message, unpacked into DIR or written
as a tar; no image is tagged. `--build-context NAME=DIR` sends DIR (its own `.dockerignore` applied)
in the same tar under a reserved directory, `NAME=docker-image://REF` names an image: `COPY --from=NAME`,
`RUN --mount=from=NAME` and `FROM NAME` read it, and it replaces a stage or an image of that name
(BuildKit's rule; docs/build.md). `--cache-from IMAGE` (repeatable): a step that misses the cache is
taken from IMAGE (here, or pulled when missing) when IMAGE's history and layers begin with the step's
parent's and its next history entry is the step's own, its layer shared (docs/build.md); an IMAGE
that cannot be found is a warning. What this builder does not do is refused by the flag's name: `--ssh`,
`--cache-to`, buildx's `--cache-from type=...`, `--platform` of another architecture, `--squash`, a git, URL or
OCI-layout `--build-context`.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile

from ketch.cli.containers import _client, _parser, command

REFUSED = {"ssh": "--ssh", "squash": "--squash", "cache_to": "--cache-to"}


def register(sub, name, help_):
    p = _parser(sub, name, help_)
    p.add_argument("-t", "--tag", action="append", default=[], help="name and optionally a tag (name:tag)")
    p.add_argument("-f", "--file", help="name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)")
    p.add_argument("--build-arg", action="append", default=[], help="set a build-time variable K[=V]")
    p.add_argument("--target", help="the stage to build")
    p.add_argument("--no-cache", action="store_true", help="do not use the cache")
    p.add_argument("--no-cache-filter", action="append", default=[], help="do not cache the stage STAGE")
    p.add_argument("--pull", action="store_true", help="always pull the base images")
    p.add_argument("--label", action="append", default=[], help="set metadata K=V on the image")
    p.add_argument("--network", default="default", help="networking mode of the RUN steps (default, host, none)")
    p.add_argument("--add-host", action="append", default=[], help="add a custom host-to-IP mapping (host:ip)")
    p.add_argument("--shm-size", help="size of /dev/shm of the RUN steps")
    p.add_argument("--ulimit", action="append", default=[], help="ulimit of the RUN steps (name=soft[:hard])")
    p.add_argument("--iidfile", help="write the image ID to the file")
    p.add_argument("-o", "--output", help="type=local,dest=DIR | type=tar,dest=FILE|- | type=image "
                                          "(DIR alone: local; - alone: a tar on stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("--progress", default="auto", help="auto, plain (a line per event) or tty (the live view); "
                                                       "auto is tty on a terminal")
    p.add_argument("--secret", action="append", default=[],
                   metavar="id=ID[,src=FILE|,env=VAR][,type=file|env]",
                   help="a secret for RUN --mount=type=secret (a file, or env= in the mount: a variable): "
                        "its value from the file FILE or the variable VAR of this environment "
                        "(type=env: src= names the variable; id=ID alone: the variable ID if set, else the file ID)")
    p.add_argument("--build-context", action="append", default=[], metavar="NAME=DIR|docker-image://REF",
                   help="an additional named context, for COPY --from=NAME, RUN --mount=from=NAME and FROM NAME "
                        "(it replaces a stage or an image of that name)")
    p.add_argument("--cache-from", action="append", default=[], metavar="IMAGE",
                   help="an image whose history and layers seed the cache (here, or pulled when missing; "
                        "one that cannot be found is a warning)")
    p.add_argument("--rm", default="true", help="remove intermediate containers after a successful build")
    p.add_argument("--force-rm", action="store_true", help="always remove intermediate containers")
    p.add_argument("--platform", help="the platform to build for (only this machine's)")
    for dest, flag in REFUSED.items():
        p.add_argument(flag, dest=dest, action="append", help="not supported (refused)")
    p.add_argument("context", metavar="PATH|-")
    p.set_defaults(func=cmd_build)


def _refuse(args) -> None:
    from ketch.cli.runopts import FlagError
    for dest, flag in REFUSED.items():
        if getattr(args, dest, None):
            raise FlagError(f"{flag} is not supported by the Ketch builder (the classic builder has no {flag})")
    if args.progress not in ("auto", "plain", "tty"):
        raise FlagError(f'invalid --progress "{args.progress}": auto, plain or tty')
    if args.context.startswith(("http://", "https://", "git@", "git://", "github.com/")):
        raise FlagError(f"context {args.context}: remote contexts are not supported (this builder fetches nothing)")


def parse_cache_from(values: list[str]) -> list[str]:
    """`--cache-from IMAGE`: image references, as the docker CLI's legacy builder sends them; buildx's
    `type=...` cache imports (BuildKit's exported cache) are refused by name."""
    from ketch.cli.runopts import FlagError
    for v in values:
        if "=" in v:
            raise FlagError(f"--cache-from {v}: BuildKit's cache imports (type=...) are not supported by the "
                            f"Ketch builder; name an image (--cache-from REPO:TAG)")
    return values


def parse_output(value: str | None) -> tuple[str, str] | None:
    """`-o` as buildx reads it: (`local`|`tar`, dest), or None for an image (`type=image`, no -o)."""
    from ketch.cli.runopts import FlagError
    if not value:
        return None
    if "=" not in value:
        return ("tar", "-") if value == "-" else ("local", value)
    fields = {}
    for part in value.split(","):
        k, eq, v = part.partition("=")
        if not eq:
            raise FlagError(f"invalid --output {value!r}: {part!r} is not KEY=VALUE")
        fields[k.strip().lower()] = v
    kind = fields.get("type", "local").lower()
    if kind in ("image", "docker", "moby"):
        return None
    if kind not in ("local", "tar"):
        raise FlagError(f"--output type={kind}: this builder writes an image, a local directory or a tar")
    dest = fields.get("dest", "")
    if not dest:
        raise FlagError(f"--output type={kind}: dest= is required")
    if kind == "local" and dest == "-":
        raise FlagError("--output type=local: dest=- is for type=tar")
    return kind, dest


def _write_output(kind: str, dest: str, spool) -> None:
    """The final root's tar (spooled): unpacked into the directory DEST (made when missing; nothing
    is followed through a symlink), or written to the file DEST or stdout."""
    spool.seek(0)
    if kind == "tar":
        import shutil
        if dest == "-":
            shutil.copyfileobj(spool, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(dest, "wb") as f:
                shutil.copyfileobj(spool, f)
        return
    from ketch.archive.apply import extract_archive
    os.makedirs(dest, exist_ok=True)
    extract_archive(spool, os.path.abspath(dest), follow_symlinks=False)


def _build_args(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        k, eq, val = v.partition("=")
        if eq:
            out[k] = val
        elif k in os.environ:
            out[k] = os.environ[k]
    return out


def _pairs(values: list[str], what: str) -> dict[str, str]:
    from ketch.cli.runopts import FlagError
    out = {}
    for v in values:
        k, eq, val = v.partition("=")
        if not k:
            raise FlagError(f"invalid {what} {v!r}")
        out[k] = val
    return out


def _ulimits(values: list[str]) -> list[dict]:
    from ketch.cli.runopts import FlagError
    out = []
    for v in values:
        name, _, lim = v.partition("=")
        soft, _, hard = lim.partition(":")
        try:
            out.append({"Name": name, "Soft": int(soft), "Hard": int(hard or soft)})
        except ValueError:
            raise FlagError(f"invalid ulimit argument: {v}") from None
    return out


def _add(tf: tarfile.TarFile, path: str, rel: str, st: os.stat_result) -> None:
    """One entry from the walk's own lstat (tarfile.add stats again and looks the owner's names up:
    a third of a 3,000-file context's time); hard-linked files and the rest through tarfile.add."""
    import stat as st_
    mode = st.st_mode
    if st_.S_ISDIR(mode) or st_.S_ISLNK(mode) or (st_.S_ISREG(mode) and st.st_nlink == 1):
        ti = tarfile.TarInfo(rel)
        ti.mode, ti.uid, ti.gid, ti.mtime = st_.S_IMODE(mode), st.st_uid, st.st_gid, int(st.st_mtime)
        if st_.S_ISDIR(mode):
            ti.type, ti.name = tarfile.DIRTYPE, rel + "/"   # as tarfile names a directory
            _addfile(tf, ti)
        elif st_.S_ISLNK(mode):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(path)
            _addfile(tf, ti)
        else:
            ti.size = st.st_size
            with open(path, "rb") as f:
                _addfile(tf, ti, f)
        return
    tf.add(path, arcname=rel, recursive=False)


def _addfile(tf: tarfile.TarFile, ti: tarfile.TarInfo, f=None) -> None:
    """tf.addfile(ti, f), with a plain ustar header when one says it all (ketch.archive.upper's, built
    directly: tarfile's copy of the TarInfo and its general header code were half the tar's time)."""
    from ketch.archive.upper import ustar_header
    buf = ustar_header(ti)
    if buf is None:
        tf.addfile(ti, f)
        return
    out = tf.fileobj
    assert out is not None
    out.write(buf)
    size = ti.size if f is not None else 0
    if size:
        left = size
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise OSError(f"{ti.name}: unexpected end of data (the file shrank while it was read)")
            out.write(chunk)
            left -= len(chunk)
        rem = size % tarfile.BLOCKSIZE
        if rem:
            out.write(tarfile.NUL * (tarfile.BLOCKSIZE - rem))
            size += tarfile.BLOCKSIZE - rem
    tf.offset += len(buf) + size


def parse_contexts(values: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """`--build-context NAME=VALUE` as buildx reads it: (the `ketchcontexts` query's entries by name,
    the directories to send by their directory in the tar). NAME is a reference's familiar name
    (`alpine`, not `docker.io/library/alpine:latest`); VALUE a local directory or
    `docker-image://REF`; git, URL and OCI-layout contexts are refused by name."""
    from ketch.cli.runopts import FlagError
    from ketch.oci.reference import shortest
    specs: dict[str, dict] = {}
    dirs: dict[str, str] = {}
    top = f".ketchcontexts.{os.urandom(8).hex()}"   # the daemon's reserved prefix (ketch/engine/buildcontexts.py)
    for value in values:
        raw, eq, where = value.partition("=")
        if not eq or not raw or not where:
            raise FlagError(f"invalid context value: {value}, expected key=value")
        if raw != raw.lower() or any(c.isspace() for c in raw):
            raise FlagError(f"invalid context name {raw}: names are lower-case references (as a stage's name)")
        name = shortest(raw)
        lowered = where.lower()
        if lowered.startswith("docker-image://"):
            ref = where[len("docker-image://"):]
            if not ref:
                raise FlagError(f"--build-context {value}: docker-image:// needs an image reference")
            specs[name] = {"Type": "image", "Ref": ref}
            continue
        if lowered.startswith("oci-layout://"):
            raise FlagError(f"--build-context {value}: an OCI layout context is not supported by the Ketch builder")
        if lowered.startswith(("http://", "https://", "git://", "git@", "ssh://", "github.com/")) or \
                lowered.endswith(".git") or "://" in lowered:
            raise FlagError(f"--build-context {value}: a git or URL context is not supported by the Ketch builder "
                            f"(it fetches nothing): a local directory or docker-image://REF")
        if not os.path.isdir(where):
            raise FlagError(f"--build-context {value}: {where} is not a directory")
        member = f"{top}/{len(dirs)}"
        dirs[member] = where
        specs[name] = {"Type": "dir", "Path": member}
    return specs, dirs


def _add_tree(tf: tarfile.TarFile, root: str, prefix: str, matcher, keep=()) -> None:
    """``root``'s entries that ``matcher`` keeps, under ``prefix`` (the names of ``keep`` always)."""
    from ketch.build import dockerignore
    for rel, st in dockerignore.walk(root, matcher):
        _add(tf, os.path.join(root, rel), prefix + rel, st)
    for k in keep:
        p = os.path.join(root, k)
        if matcher.excluded(k) and os.path.isfile(p):
            tf.add(p, arcname=prefix + k, recursive=False)


def add_contexts(tf: tarfile.TarFile, dirs: dict[str, str]) -> None:
    """The directory contexts under their members' directories, each with its own .dockerignore applied
    (and the file itself sent, as the main context's: the daemon applies it again)."""
    from ketch.build import dockerignore
    for member, where in dirs.items():
        ti = tarfile.TarInfo(member)
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, int(os.stat(where).st_mtime)
        tf.addfile(ti)
        _add_tree(tf, where, member + "/", dockerignore.load(where, None), (".dockerignore",))


def retar(body, dirs: dict[str, str]):
    """A tar CONTEXT (a file or stdin; plain or compressed) or a Dockerfile alone, with the directory
    contexts added: a new tar in a spooled file, and whether the body was a Dockerfile."""
    out = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    src = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    import shutil
    shutil.copyfileobj(body, src)
    src.seek(0)
    alone = False
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        try:
            with tarfile.open(fileobj=src, mode="r:*") as inner:
                for m in inner:
                    tf.addfile(m, inner.extractfile(m) if m.isfile() else None)
        except tarfile.ReadError:   # `ketch build - < Dockerfile`: a Dockerfile with no context
            src.seek(0, 2)
            ti = tarfile.TarInfo("Dockerfile")
            ti.size, ti.mode = src.tell(), 0o644
            src.seek(0)
            tf.addfile(ti, src)
            alone = True
        add_contexts(tf, dirs)
    src.close()
    out.seek(0)
    return out, alone


def tar_context(ctx_dir: str, dockerfile: str | None, dockerfile_data: bytes | None,
                contexts: dict[str, str] | None = None):
    """The context directory as a tar in a spooled file (the walk skips what .dockerignore excludes,
    never the Dockerfile or .dockerignore), and the Dockerfile's name in it; ``contexts``: the
    directory contexts to add (parse_contexts)."""
    from ketch.build import dockerignore
    if not os.path.isdir(ctx_dir):
        raise FileNotFoundError(f"unable to prepare context: path {ctx_dir!r} not found")
    name = "Dockerfile"
    outside = None
    if dockerfile_data is None and dockerfile:
        full = os.path.abspath(dockerfile if os.path.isabs(dockerfile) or os.path.exists(dockerfile)
                               else os.path.join(ctx_dir, dockerfile))
        rel = os.path.relpath(full, os.path.abspath(ctx_dir))
        if rel.startswith(".."):
            with open(full, "rb") as f:
                dockerfile_data = f.read()
            outside = full
        else:
            name = rel
    if dockerfile_data is None and not os.path.isfile(os.path.join(ctx_dir, name)) and not (
            name == "Dockerfile" and os.path.isfile(os.path.join(ctx_dir, "dockerfile"))):
        raise FileNotFoundError(f"unable to prepare context: the Dockerfile {os.path.join(ctx_dir, name)!r} "
                                f"does not exist")
    if dockerfile_data is not None:
        name = f".dockerfile.{os.urandom(10).hex()}"
    ign_path = outside if outside else (os.path.join(ctx_dir, name) if dockerfile else None)
    matcher = dockerignore.load(ctx_dir, ign_path)
    keep = {name, ".dockerignore", name + ".dockerignore"}
    out = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:   # PAX: a header more per file
        _add_tree(tf, ctx_dir, "", matcher, keep)
        if contexts:
            add_contexts(tf, contexts)
        if dockerfile_data is not None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(dockerfile_data), 0o644
            import io
            tf.addfile(ti, io.BytesIO(dockerfile_data))
    out.seek(0)
    return out, name


def _with_secrets(body, secrets: dict[str, bytes], params: dict):
    """The body with the secrets in front (`ketchsecrets=N`: the first N bytes, see ketch/api/builds.py)."""
    import base64
    head = json.dumps({k: base64.b64encode(v).decode() for k, v in secrets.items()}).encode()
    params["ketchsecrets"] = str(len(head))

    def chunks():
        yield head
        if isinstance(body, (bytes, bytearray)):
            yield bytes(body)
            return
        while True:
            b = body.read(1 << 16)
            if not b:
                return
            yield b
    return _Chained(chunks(), body)


class _Chained:
    """An iterable body that closes the file it reads (cmd_build closes what it sent)."""

    def __init__(self, it, inner):
        self.it, self.inner = it, inner

    def __iter__(self):
        return self.it

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None and self.inner is not sys.stdin.buffer:
            close()


@command("build")
def cmd_build(args, ctx):
    _refuse(args)
    params: dict = {"target": args.target, "nocache": args.no_cache or None,
                    "pull": args.pull or None, "q": args.quiet or None, "networkmode": args.network,
                    "rm": "0" if args.rm.lower() in ("false", "0") else None, "forcerm": args.force_rm or None,
                    "platform": args.platform}
    if args.build_arg:
        params["buildargs"] = json.dumps(_build_args(args.build_arg))
    if args.label:
        params["labels"] = json.dumps(_pairs(args.label, "label"))
    if args.no_cache_filter:
        params["nocachefilter"] = json.dumps(args.no_cache_filter)
    if args.cache_from:
        params["cachefrom"] = json.dumps(parse_cache_from(args.cache_from))
    if args.add_host:
        params["extrahosts"] = ",".join(args.add_host)
    if args.shm_size:
        from ketch.units import ram_in_bytes
        params["shmsize"] = str(ram_in_bytes(args.shm_size))
    if args.ulimit:
        params["ulimits"] = json.dumps(_ulimits(args.ulimit))
    output = parse_output(args.output)
    if output:
        if args.tag:
            from ketch.cli.runopts import FlagError
            raise FlagError(f"-t: a build with --output type={output[0]} makes no image to tag")
        params["outputs"] = json.dumps([{"Type": output[0], "Attrs": {}}])
    specs, dirs = parse_contexts(args.build_context)
    if specs:
        params["ketchcontexts"] = json.dumps(specs)
    stdin_df = None
    if args.file == "-":
        if args.context == "-":
            from ketch.cli.runopts import FlagError
            raise FlagError("invalid argument: can't use stdin for both build context and dockerfile")
        stdin_df = sys.stdin.buffer.read()
    if args.context == "-":
        body = sys.stdin.buffer
        if args.file:
            params["dockerfile"] = args.file
    elif os.path.isfile(args.context):
        body = open(args.context, "rb")  # a local tar (or a Dockerfile alone), sent as it is
        if args.file:
            params["dockerfile"] = args.file
    else:
        body, name = tar_context(args.context, args.file, stdin_df, dirs)
        params["dockerfile"] = name
    if dirs and (args.context == "-" or os.path.isfile(args.context)):
        given = body
        try:
            body, alone = retar(given, dirs)
        except (tarfile.TarError, OSError, EOFError) as e:
            from ketch.cli.runopts import FlagError
            raise FlagError(f"--build-context: the tar CONTEXT could not be read to add the contexts to it: {e}") \
                from None
        finally:
            if given is not sys.stdin.buffer:
                given.close()
        if alone and not args.file:
            params["dockerfile"] = "Dockerfile"
    from ketch.cli import buildprogress
    if args.secret:
        body = _with_secrets(body, buildprogress.parse_secrets(args.secret, os.environ), params)
    iid = ""
    progress = None
    spool = tempfile.TemporaryFile() if output else None
    quiet = args.quiet or (output is not None and output[1] == "-")   # stdout is the tar's
    try:
        pairs = [("t", t) for t in args.tag] + list(params.items())
        progress = buildprogress.open_progress(args.progress)
        for msg in _client(args).image_build(body, pairs, spool):
            if "error" in msg or "errorDetail" in msg:
                progress.fail(msg)   # BuildKit's words; the API's errorDetail keeps dockerd's
                return int((msg.get("errorDetail") or {}).get("code") or 1)
            if "aux" in msg and isinstance(msg["aux"], dict) and msg["aux"].get("ID"):
                iid = msg["aux"]["ID"]
            if not quiet:
                progress.message(msg)
        if output and spool is not None:
            _write_output(output[0], output[1], spool)
    finally:
        if progress is not None:
            progress.close()
        close = getattr(body, "close", None)
        if close is not None and body is not sys.stdin.buffer:
            close()
        if spool is not None:
            spool.close()
    if args.quiet and not (output and output[1] == "-"):
        print(iid)
    if args.iidfile:
        with open(args.iidfile, "w") as f:
            f.write(iid)
    return 0
