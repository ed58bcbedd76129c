"""Image commands in direct mode: they work on the data root in-process (like podman).

    ketch pull [--platform P] [-q] [-a] REF         ketch push [-q] REF
    ketch images [-a] [-q] [--digests] [--no-trunc] [--format F] [-f dangling=true|reference=PAT] [REPO]
    ketch image inspect|ls|rm|prune|tag|history|save|load|import|pull|push|base ...
    ketch history REF   ketch tag SRC DST   ketch rmi [-f] REF...   ketch save [-o F] [--format docker-archive|oci-archive] REF...
    ketch load [-i F] [-q]   ketch import [-c CHANGE] [-m MSG] FILE|- [REF]
"""

import json
import sys

from ketch.cli import format as fmt


def _run(coro):
    import asyncio
    return asyncio.run(coro)


# ----------------------------------------------------------------------------- pull / push

def _pull_args(p):
    p.add_argument("--platform", help="os/arch[/variant] to choose from a multi-platform image")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image reference")
    p.add_argument("-a", "--all-tags", action="store_true", help="pull every tag of the repository")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(func=cmd_pull)


def cmd_pull(args, ctx):
    from ketch.cli import progress
    from ketch.oci import reference
    svc = ctx.images
    ref = reference.parse(args.name)
    refs = [str(ref)]
    if args.all_tags:
        if ref.digest or (args.name.rsplit("/", 1)[-1].count(":") and not args.name.endswith(":latest")
                          and ":" in args.name.rsplit("/", 1)[-1]):
            from ketch.errors import InvalidArgument
            raise InvalidArgument("tag can't be used with --all-tags/-a")

        async def tags():
            async with svc.client() as c:
                return await c.list_tags(ref.repository())
        refs = [str(ref.with_tag(t)) for t in sorted(_run(tags()))]
    for r in refs:
        pr = progress.make(args.quiet)
        try:
            _run(svc.pull(r, platform=args.platform, progress=pr))
        finally:
            pr.close()
        print(str(reference.parse(r)))
    return 0


def _push_args(p):
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.set_defaults(func=cmd_push)


def cmd_push(args, ctx):
    from ketch.cli import progress
    pr = progress.make(args.quiet)
    try:
        d = _run(ctx.images.push(args.name, progress=pr))
    finally:
        pr.close()
    if args.quiet:
        print(d)
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


def image_rows(svc, summaries, no_trunc=False):
    """One row per (image, tag) as `docker images --format '{{json .}}'` prints them."""
    from ketch.oci import reference
    rows = []
    for s in summaries:
        iid = s["Id"] if no_trunc else s["Id"][7:19]
        digests = {}
        for d in s["RepoDigests"]:
            name, _, dig = d.partition("@")
            digests[name] = dig
        pairs = []
        for t in s["RepoTags"]:
            r = reference.parse(t)
            pairs.append((r.familiar_name(), r.tag))
        if not pairs:
            pairs = [(name, "<none>") for name in digests] or [("<none>", "<none>")]
        for repo, tag in pairs:
            rows.append({
                "ID": iid, "Repository": repo, "Tag": tag, "Digest": digests.get(repo, "<none>"),
                "CreatedSince": fmt.since(s["Created"]),
                "CreatedAt": _created_at(s["Created"]),
                "Size": fmt.human_size(s["Size"]), "SharedSize": fmt.human_size(s["SharedSize"]),
                "UniqueSize": fmt.human_size(s["Size"] - s["SharedSize"]),
                "VirtualSize": fmt.human_size(s["Size"]), "Containers": str(s["Containers"]),
            })
    return rows


def _created_at(t):
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(t))


def cmd_images(args, ctx):
    from ketch.errors import InvalidArgument
    dangling, pattern = None, args.repository
    for f in args.filter:
        k, _, v = f.partition("=")
        if k == "dangling":
            dangling = v.lower() in ("1", "true")
        elif k == "reference":
            pattern = v
        else:
            raise InvalidArgument(f"invalid filter {k!r} (dangling, reference)")
    svc = ctx.images
    sums = svc.list(args.all, dangling, pattern)
    if args.quiet:
        seen = []
        for s in sums:
            i = s["Id"] if args.no_trunc else s["Id"][7:19]
            if i not in seen:
                seen.append(i)
        for i in seen:
            print(i)
        return 0
    rows = image_rows(svc, sums, args.no_trunc)
    fmt.print_formatted(rows, args.format, _IMAGES_TABLE_DIGESTS if args.digests else _IMAGES_TABLE, sys.stdout)
    return 0


# ----------------------------------------------------------------------------- inspect / history / tag / rmi

def _inspect_args(p):
    p.add_argument("-f", "--format", help="Go template subset")
    p.add_argument("names", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args, ctx):
    from ketch.errors import KetchError
    out, rc = [], 0
    for n in args.names:
        try:
            out.append(ctx.images.inspect(n))
        except KetchError as e:
            print(f"Error: {e}", file=sys.stderr)
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
    hist = ctx.images.history(args.name)
    rows = []
    for h in hist:
        cb = h["CreatedBy"]
        if not args.no_trunc and len(cb) > 45:
            cb = cb[:44] + "…"
        rows.append({"ID": h["Id"] if (args.no_trunc or h["Id"] == "<missing>") else h["Id"][7:19],
                     "CreatedSince": fmt.since(h["Created"]), "CreatedAt": _created_at(h["Created"]),
                     "CreatedBy": cb, "Size": fmt.human_size(h["Size"]), "Comment": h["Comment"]})
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
    ctx.images.tag(args.source, args.target)
    return 0


def _rmi_args(p):
    p.add_argument("-f", "--force", action="store_true", help="untag even if containers use it")
    p.add_argument("--no-prune", action="store_true", help="do not collect unreferenced layers")
    p.add_argument("names", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_rmi)


def cmd_rmi(args, ctx):
    from ketch.errors import KetchError
    rc = 0
    for n in args.names:
        try:
            for r in ctx.images.remove(n, force=args.force, prune=not args.no_prune):
                k, v = next(iter(r.items()))
                print(f"{k}: {v}")
        except KetchError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    return rc


def _prune_args(p):
    p.add_argument("-a", "--all", action="store_true", help="remove all images no container uses, not only dangling")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_prune)


def cmd_prune(args, ctx):
    if not args.force:
        if not sys.stdin.isatty():
            print("Error: image prune needs --force when stdin is not a terminal", file=sys.stderr)
            return 1
        what = "all images without at least one container associated to them" if args.all else "all dangling images"
        ans = input(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        if ans.strip().lower() not in ("y", "yes"):
            return 0
    res = ctx.images.prune(all=args.all)
    if res["ImagesDeleted"]:
        print("Deleted Images:")
        for r in res["ImagesDeleted"]:
            k, v = next(iter(r.items()))
            print(f"{k.lower()}: {v}")
        print()
    g = res["gc"]
    print(f"Removed {len(g['blobs'])} blobs and {len(g['snapshots'])} layer snapshots")
    print(f"Total reclaimed space: {fmt.human_size(res['SpaceReclaimed'])}")
    return 0


# ----------------------------------------------------------------------------- save / load / import / base

def _save_args(p):
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.add_argument("--format", default="docker-archive", choices=("docker-archive", "oci-archive"))
    p.add_argument("names", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_save)


def cmd_save(args, ctx):
    import os
    if args.output:
        tmp = args.output + ".ketch-tmp"
        try:
            with open(tmp, "wb") as f:
                ctx.images.save(args.names, f, args.format)
            os.replace(tmp, args.output)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return 0
    if sys.stdout.isatty():
        print("Error: cowardly refusing to save to a terminal. Use the -o flag or redirect", file=sys.stderr)
        return 1
    ctx.images.save(args.names, sys.stdout.buffer, args.format)
    sys.stdout.buffer.flush()
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
            res = ctx.images.load(f, progress=pr)
    else:
        res = ctx.images.load(sys.stdin.buffer, progress=pr)
    if args.quiet:
        for r in res:
            print(r["id"])
    return 0


def _import_args(p):
    p.add_argument("-c", "--change", action="append", default=[], help="Dockerfile instruction (CMD, ENV, ...)")
    p.add_argument("-m", "--message", default="")
    p.add_argument("--platform")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.set_defaults(func=cmd_import)


def cmd_import(args, ctx):
    if args.file == "-":
        iid = ctx.images.import_rootfs(sys.stdin.buffer, args.reference, args.change, args.message, args.platform)
    else:
        with open(args.file, "rb") as f:
            iid = ctx.images.import_rootfs(f, args.reference, args.change, args.message, args.platform)
    print(iid)
    return 0


def _base_args(p):
    p.add_argument("--busybox", default="/bin/busybox", help="the static busybox to use (busybox-static)")
    p.add_argument("--tag", default="docker.io/library/busybox:latest")
    p.set_defaults(func=cmd_base)


def cmd_base(args, ctx):
    iid = ctx.images.make_base_image(ref=args.tag, busybox=args.busybox)
    from ketch.oci import reference
    print(f"{reference.parse(args.tag).familiar()} {iid}")
    return 0


# ----------------------------------------------------------------------------- registration

_TOP = {"pull": _pull_args, "push": _push_args, "images": _images_args, "history": _history_args,
        "tag": _tag_args, "rmi": _rmi_args, "save": _save_args, "load": _load_args, "import": _import_args}

_IMAGE_SUB = {  # `ketch image <sub>`
    "ls": ("List images", _images_args), "list": ("List images", _images_args),
    "inspect": ("Display detailed information on one or more images", _inspect_args),
    "rm": ("Remove one or more images", _rmi_args), "prune": ("Remove unused images", _prune_args),
    "tag": ("Create a tag", _tag_args), "history": ("Show the history of an image", _history_args),
    "save": ("Save images to a tar archive", _save_args), "load": ("Load images from a tar archive", _load_args),
    "import": ("Import a root file system tarball", _import_args),
    "pull": ("Pull an image", _pull_args), "push": ("Push an image", _push_args),
    "base": ("Make the local busybox base image from /bin/busybox (no network)", _base_args),
}


def register(sub, name, help_):
    if name == "image":
        p = sub.add_parser("image", help=help_)
        isub = p.add_subparsers(dest="image_command", metavar="COMMAND")
        for n, (h, fn) in _IMAGE_SUB.items():
            fn(isub.add_parser(n, help=h))
        return
    _TOP[name](sub.add_parser(name, help=help_))
