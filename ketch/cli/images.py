"""Image commands, through ketchd's API (ketch.client), as the docker CLI does them.

    ketch pull [--platform P] [-q] [-a] REF         ketch push [-q] REF
    ketch images [-a] [-q] [--digests] [--no-trunc] [--format F] [-f dangling=true|reference=PAT] [REPO]
    ketch image inspect|ls|rm|prune|tag|history|save|load|import|pull|push|base ...
    ketch history REF   ketch tag SRC DST   ketch rmi [-f] REF...
    ketch save [-o F] [--format docker-archive|oci-archive] REF...
    ketch load [-i F] [-q]   ketch import [-c CHANGE] [-m MSG] FILE|- [REF]

So `-H`/`KETCH_HOST` names the daemon whose images these are, the same for every command, and
`ketch images` shows what `docker images` shows on that socket. Credentials are the client's
(ketch.client.auth: the docker config file), sent in X-Registry-Auth. `image base` builds the
busybox image on this side (ketch.images.base, from /bin/busybox: no data root, no network)
and loads it through the daemon.
"""

import sys

from ketch import _json as json
from ketch.cli import format as fmt
from ketch.errors import KetchError


def _client(ctx):
    return ctx.client


def _stream_error(msg: dict) -> KetchError:
    """The error message of a progress stream as an error from the daemon."""
    from ketch.errors import Internal, NotFound, PermissionDenied
    text = msg.get("error") or (msg.get("errorDetail") or {}).get("message", "") or "failed"
    low = text.lower()
    kind: type[KetchError]
    if "not found" in low or "unknown" in low or "no such" in low or "does not exist" in low:
        kind, status = NotFound, 404
    elif "authentication required" in low or "denied" in low or "unauthorized" in low:
        kind, status = PermissionDenied, 403
    else:
        kind, status = Internal, 500
    e = kind(text)
    e.status = status
    return e


def consume(messages, show=None) -> list:
    """Show each progress message; raise the stream's error; return the messages."""
    seen = []
    for msg in messages:
        if "error" in msg or "errorDetail" in msg:
            raise _stream_error(msg)
        seen.append(msg)
        if show is not None:
            show(msg)
    return seen


def _auth_header(name):
    from ketch.client import auth
    return auth.header_for(name)


# ----------------------------------------------------------------------------- pull / push

def _pull_args(p):
    p.add_argument("--platform", help="os/arch[/variant] to choose from a multi-platform image")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image reference")
    p.add_argument("-a", "--all-tags", action="store_true", help="pull every tag of the repository")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(func=cmd_pull)


def cmd_pull(args, ctx):
    from ketch.cli import progress
    from ketch.errors import InvalidArgument
    from ketch.oci import reference
    ref = reference.parse(args.name, default_tag=None)
    if args.all_tags and (ref.tag or ref.digest):
        raise InvalidArgument("tag can't be used with --all-tags/-a")
    if ref.digest:
        image, tag = ref.name, ref.digest
    else:
        image, tag = ref.name, (None if args.all_tags else ref.tag or "latest")
    pr = progress.make(args.quiet)
    try:
        msgs = consume(_client(ctx).image_pull(image, tag, args.platform, _auth_header(ref.name)), pr)
    finally:
        pr.close()
    if args.all_tags:
        tags = [m["id"] for m in msgs if m.get("status", "").startswith("Pulling from") and m.get("id")]
        for t in dict.fromkeys(tags):
            print(str(ref.with_tag(t)))
    else:
        print(str(reference.parse(args.name)))
    return 0


def _push_args(p):
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.set_defaults(func=cmd_push)


def cmd_push(args, ctx):
    from ketch.cli import progress
    from ketch.oci import reference
    ref = reference.parse(args.name, default_tag=None)
    pr = progress.make(args.quiet)
    try:
        msgs = consume(_client(ctx).image_push(ref.name, ref.tag, _auth_header(ref.name)), pr)
    finally:
        pr.close()
    if args.quiet:
        for m in msgs:
            s = m.get("status", "")
            if ": digest: " in s:
                print(s.split(": digest: ", 1)[1].split()[0])
    return 0


# ----------------------------------------------------------------------------- images

_IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}"
_IMAGES_TABLE_DIGESTS = ("table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                         "\t{{.SharedSize}}")


def _images_args(p):
    p.add_argument("-a", "--all", action="store_true", help="show all images (default hides none: no intermediates)")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs")
    p.add_argument("--format", help="Go template subset: {{.ID}}, {{json .}}, table ...")
    p.add_argument("-f", "--filter", action="append", default=[], help="dangling=true|false, reference=PATTERN")
    p.add_argument("repository", nargs="?")
    p.set_defaults(func=cmd_images)


def _familiar(name):
    """(repository, tag) as the docker CLI shows a RepoTag."""
    from ketch.oci import reference
    r = reference.parse(name)
    return r.familiar_name(), r.tag


def image_rows(summaries, no_trunc=False):
    """One row per (image, tag) as `docker images --format '{{json .}}'` prints them."""
    rows = []
    for s in summaries:
        iid = s["Id"] if no_trunc else s["Id"][7:19]
        digests = {}
        for d in s.get("RepoDigests") or []:
            name, _, dig = d.partition("@")
            digests[name] = dig
        pairs = [_familiar(t) for t in (s.get("RepoTags") or []) if t != "<none>:<none>"]
        if not pairs:
            pairs = [(name, "<none>") for name in digests] or [("<none>", "<none>")]
        shared = s.get("SharedSize", -1)
        for repo, tag in pairs:
            rows.append(fmt.Row({
                "ID": iid, "Repository": repo, "Tag": tag, "Digest": digests.get(repo, "<none>"),
                "CreatedSince": fmt.since(s["Created"]),
                "CreatedAt": _created_at(s["Created"]),
                # as the docker CLI: Size to 3 significant digits, SharedSize and UniqueSize to 4
                "Size": fmt.human_size(s["Size"]), "SharedSize": fmt.human_size(shared, 4) if shared >= 0 else "N/A",
                "UniqueSize": fmt.human_size(s["Size"] - shared, 4) if shared >= 0 else "N/A",
                "VirtualSize": fmt.human_size(s.get("VirtualSize", s["Size"])),
                "Containers": str(s.get("Containers", -1)) if s.get("Containers", -1) >= 0 else "N/A",
            }, s.get("Labels") or {}))
    return rows


def _created_at(t):
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(t))


def _filters(pairs, allowed):
    from ketch.errors import InvalidArgument
    out = []
    for f in pairs:
        k, sep, v = f.partition("=")
        if not sep or k not in allowed:
            raise InvalidArgument(f"invalid filter {f!r} ({', '.join(allowed)})")
        out.append((k, v))
    return out


def cmd_images(args, ctx):
    filters = _filters(args.filter, ("dangling", "reference"))
    if args.repository:
        filters.append(("reference", args.repository))
    sums = _client(ctx).image_list(args.all, filters or None)
    if args.quiet:
        for i in dict.fromkeys(s["Id"] if args.no_trunc else s["Id"][7:19] for s in sums):
            print(i)
        return 0
    rows = image_rows(sums, args.no_trunc)
    fmt.print_formatted(rows, args.format, _IMAGES_TABLE_DIGESTS if args.digests else _IMAGES_TABLE, sys.stdout)
    return 0


# ----------------------------------------------------------------------------- inspect / history / tag / rmi

def _describe(e):
    from ketch.cli.main import describe
    return describe(e)


def _unreachable(e) -> bool:
    """No daemon to talk to: a command over several images stops at once."""
    from ketch.client import DaemonNotRunning, DaemonPermissionDenied
    return isinstance(e, (DaemonNotRunning, DaemonPermissionDenied))


def _inspect_args(p):
    p.add_argument("-f", "--format", help="Go template subset")
    p.add_argument("names", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args, ctx):
    out, rc = [], 0
    for n in args.names:
        try:
            out.append(_client(ctx).image_inspect(n))
        except KetchError as e:
            if _unreachable(e):
                raise
            print(_describe(e), file=sys.stderr)
            rc = 1
    if args.format:
        for o in out:
            print(fmt.render(args.format, o))
    else:
        print(json.dumps(out, indent=4))
    return rc


def _history_args(p):
    p.add_argument("-H", "--human", default=True, action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format")
    p.add_argument("name", metavar="IMAGE")
    p.set_defaults(func=cmd_history)


def cmd_history(args, ctx):
    hist = _client(ctx).image_history(args.name)
    rows = []
    for h in hist:
        cb = h.get("CreatedBy", "")
        if not args.no_trunc and len(cb) > 45:
            cb = cb[:44] + "…"
        rows.append({"ID": h["Id"] if (args.no_trunc or h["Id"] == "<missing>") else h["Id"][7:19],
                     "CreatedSince": fmt.since(h["Created"]), "CreatedAt": _created_at(h["Created"]),
                     "CreatedBy": cb, "Size": fmt.human_size(h["Size"]), "Comment": h.get("Comment", "")})
    if args.quiet:
        for r in rows:
            print(r["ID"])
        return 0
    fmt.print_formatted(rows, args.format,
                        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}", sys.stdout,
                        headers={"ID": "IMAGE"})
    return 0


def _tag_args(p):
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(func=cmd_tag)


def cmd_tag(args, ctx):
    from ketch.oci import reference
    r = reference.parse(args.target)
    if r.digest:
        from ketch.errors import InvalidArgument
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {args.target}")
    _client(ctx).image_tag(args.source, r.name, r.tag)
    return 0


def _rmi_args(p):
    p.add_argument("-f", "--force", action="store_true", help="untag even if containers use it")
    p.add_argument("--no-prune", action="store_true", help="do not collect unreferenced layers")
    p.add_argument("names", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_rmi)


def cmd_rmi(args, ctx):
    rc = 0
    for n in args.names:
        try:
            for r in _client(ctx).image_remove(n, force=args.force, noprune=args.no_prune) or []:
                k, v = next(iter(r.items()))
                print(f"{k}: {v}")
        except KetchError as e:
            if _unreachable(e):
                raise
            print(_describe(e), file=sys.stderr)
            rc = 1
    return rc


def _prune_args(p):
    p.add_argument("-a", "--all", action="store_true", help="remove all images no container uses, not only dangling")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--filter", action="append", default=[], help="until=TIMESTAMP|DURATION, label=K[=V], label!=K[=V]")
    p.set_defaults(func=cmd_prune)


def cmd_prune(args, ctx):
    filters = _filters(args.filter, ("until", "label", "label!"))
    if not args.force:
        if not sys.stdin.isatty():
            print("Error: image prune needs --force when stdin is not a terminal", file=sys.stderr)
            return 1
        what = "all images without at least one container associated to them" if args.all else "all dangling images"
        ans = input(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        if ans.strip().lower() not in ("y", "yes"):
            return 0
    if args.all:
        filters.append(("dangling", "false"))
    res = _client(ctx).image_prune(filters or None)
    deleted = res.get("ImagesDeleted") or []
    if deleted:
        print("Deleted Images:")
        for r in deleted:
            k, v = next(iter(r.items()))
            print(f"{k.lower()}: {v}")
        print()
    print(f"Total reclaimed space: {fmt.human_size(res.get('SpaceReclaimed') or 0)}")
    return 0


# ----------------------------------------------------------------------------- save / load / import / base

def _save_args(p):
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.add_argument("--format", default="docker-archive", choices=("docker-archive", "oci-archive"))
    p.add_argument("names", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_save)


def _copy(resp, out):
    while True:
        chunk = resp.read1(1 << 20)
        if not chunk:
            return
        out.write(chunk)


def cmd_save(args, ctx):
    import os
    if not args.output and sys.stdout.isatty():
        print("Error: cowardly refusing to save to a terminal. Use the -o flag or redirect", file=sys.stderr)
        return 1
    resp = _client(ctx).image_save(args.names, args.format)
    with resp:
        if not args.output:
            _copy(resp, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        tmp = args.output + ".ketch-tmp"
        try:
            with open(tmp, "wb") as f:
                _copy(resp, f)
            os.replace(tmp, args.output)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return 0


def _load_args(p):
    p.add_argument("-i", "--input", help="read from this tar file (plain, gzip or zstd); default stdin")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_load)


def cmd_load(args, ctx):
    from ketch.cli import progress
    pr = progress.PlainProgress() if not args.quiet else progress.QuietProgress()
    if args.input:
        with open(args.input, "rb") as f:
            msgs = consume(_client(ctx).image_load(f), pr)
    else:
        if sys.stdin.isatty():
            print("Error: requested load from stdin, but stdin is empty (a terminal); use -i FILE", file=sys.stderr)
            return 1
        msgs = consume(_client(ctx).image_load(sys.stdin.buffer), pr)
    if args.quiet:
        for m in msgs:
            s = m.get("stream", "")
            for pre in ("Loaded image ID: ", "Loaded image: "):
                if s.startswith(pre):
                    print(s[len(pre):].strip())
    return 0


def _import_args(p):
    p.add_argument("-c", "--change", action="append", default=[], help="Dockerfile instruction (CMD, ENV, ...)")
    p.add_argument("-m", "--message", default="")
    p.add_argument("--platform")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.set_defaults(func=cmd_import)


def _import(ctx, data, ref, changes, message, platform):
    repo = tag = None
    if ref:
        from ketch.oci import reference
        r = reference.parse(ref)
        repo, tag = r.name, r.tag
    msgs = consume(_client(ctx).image_import(data, repo, tag, message, changes, platform))
    ids = [m["status"] for m in msgs if str(m.get("status", "")).startswith("sha256:")]
    if not ids:
        from ketch.errors import Internal
        raise Internal("import: the daemon did not answer with an image ID")
    return ids[-1]


def cmd_import(args, ctx):
    if args.file == "-":
        iid = _import(ctx, sys.stdin.buffer, args.reference, args.change, args.message, args.platform)
    else:
        with open(args.file, "rb") as f:
            iid = _import(ctx, f, args.reference, args.change, args.message, args.platform)
    print(iid)
    return 0


def _base_args(p):
    p.add_argument("--busybox", default="/bin/busybox", help="the static busybox to use (busybox-static)")
    p.add_argument("--tag", default="docker.io/library/busybox:latest")
    p.set_defaults(func=cmd_base)


def cmd_base(args, ctx):
    from ketch.images.base import base_image_archive
    from ketch.oci import reference
    data, iid = base_image_archive(args.tag, args.busybox)
    consume(_client(ctx).image_load(data, quiet=True))
    print(f"{reference.parse(args.tag).familiar()} {iid}")
    return 0


def _search_args(p):
    p.add_argument("--limit", type=int, default=None, help="max number of search results")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    p.add_argument("term", metavar="TERM")
    p.set_defaults(func=cmd_search)


def cmd_search(args, ctx):
    """GET /images/search: ketchd has no index to search and says so (the docker CLI shows the same)."""
    res = _client(ctx).image_search(args.term, args.limit)
    rows = [{"Name": r.get("name", ""), "Description": r.get("description", ""),
             "StarCount": str(r.get("star_count", 0)), "IsOfficial": "[OK]" if r.get("is_official") else "",
             "IsAutomated": "[OK]" if r.get("is_automated") else ""} for r in res or []]
    fmt.print_formatted(rows, args.format, "table {{.Name}}\t{{.Description}}\t{{.StarCount}}\t{{.IsOfficial}}"
                        "\t{{.IsAutomated}}", sys.stdout,
                        headers={"StarCount": "STARS", "IsOfficial": "OFFICIAL", "IsAutomated": "AUTOMATED"})
    return 0


# ----------------------------------------------------------------------------- registration

_TOP = {"pull": _pull_args, "push": _push_args, "images": _images_args, "history": _history_args,
        "tag": _tag_args, "rmi": _rmi_args, "save": _save_args, "load": _load_args, "import": _import_args,
        "search": _search_args}

_IMAGE_SUB = {  # `ketch image <sub>`
    "ls": ("List images", _images_args), "list": ("List images", _images_args),
    "inspect": ("Display detailed information on one or more images", _inspect_args),
    "rm": ("Remove one or more images", _rmi_args), "prune": ("Remove unused images", _prune_args),
    "tag": ("Create a tag", _tag_args), "history": ("Show the history of an image", _history_args),
    "save": ("Save images to a tar archive", _save_args), "load": ("Load images from a tar archive", _load_args),
    "import": ("Import a root file system tarball", _import_args),
    "pull": ("Pull an image", _pull_args), "push": ("Push an image", _push_args),
    "base": ("Make the local busybox base image from /bin/busybox (no network) through the daemon", _base_args),
}


def register(sub, name, help_):
    if name == "image":
        p = sub.add_parser("image", help=help_)
        isub = p.add_subparsers(dest="image_command", metavar="COMMAND")
        for n, (h, fn) in _IMAGE_SUB.items():
            fn(isub.add_parser(n, help=h))
        return
    _TOP[name](sub.add_parser(name, help=help_))
