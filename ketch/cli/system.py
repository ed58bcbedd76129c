"""ketch system check: content digests, snapshot completeness, metadata consistency, of the
daemon's store, through Ketch's own endpoint (POST /ketch/system/check)."""


def cmd_check(args, ctx):
    res = ctx.client.system_check(repair=args.repair)
    problems = res.get("Problems") or []
    for p in problems:
        print(f"{p['area']}: {p['what']}: {p['problem']}")
    ingests = res.get("Ingests") or 0
    print(f"checked {res.get('Blobs', 0)} blobs, {res.get('Snapshots', 0)} snapshots, {res.get('Images', 0)} images: "
          f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
          + (" (repaired what could be)" if args.repair and problems else ""))
    if ingests:
        print(f"{ingests} interrupted download{'s' if ingests != 1 else ''} kept for resuming "
              f"(removed by `ketch image prune` after an hour)")
    if args.repair and problems:
        # the exit status tells what is left: a second look after the repair
        left = ctx.client.system_check(repair=False).get("Problems") or []
        for p in left:
            print(f"still: {p['area']}: {p['what']}: {p['problem']}")
        print(f"{len(left)} problem{'s' if len(left) != 1 else ''} left after the repair")
        return 1 if left else 0
    return 1 if problems else 0


def register(sub, name, help_):
    p = sub.add_parser(name, help=help_)
    s = p.add_subparsers(dest="system_command", metavar="COMMAND")
    c = s.add_parser("check", help="Verify blobs, layer snapshots and image metadata (the daemon's store)")
    c.add_argument("--repair", action="store_true", help="remove damaged blobs, dead unpacks and orphans")
    c.set_defaults(func=cmd_check)
