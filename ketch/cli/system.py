"""ketch system check: content digests, snapshot completeness, metadata consistency."""


def cmd_check(args, ctx):
    svc = ctx.images
    problems = svc.check(repair=args.repair)
    blobs = sum(1 for _ in svc.content.list())
    snaps = len(svc.snapshots.list())
    images = len(svc.meta.snapshot()["images"])
    for p in problems:
        print(f"{p['area']}: {p['what']}: {p['problem']}")
    ingests = svc.content.ingests()
    print(f"checked {blobs} blobs, {snaps} snapshots, {images} images: "
          f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
          + (" (repaired what could be)" if args.repair and problems else ""))
    if ingests:
        print(f"{len(ingests)} interrupted download{'s' if len(ingests) != 1 else ''} kept for resuming "
              f"(removed by `ketch image prune` after an hour)")
    return 1 if problems and not args.repair else 0


def register(sub, name, help_):
    p = sub.add_parser(name, help=help_)
    s = p.add_subparsers(dest="system_command", metavar="COMMAND")
    c = s.add_parser("check", help="Verify blobs, layer snapshots and image metadata")
    c.add_argument("--repair", action="store_true", help="remove damaged blobs, dead unpacks and orphans")
    c.set_defaults(func=cmd_check)
