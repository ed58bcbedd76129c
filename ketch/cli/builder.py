"""`ketch builder prune`: the build cache (cache mounts, untagged step images) freed through
ketchd's POST /build/prune, as `docker builder prune` asks for it.

    ketch builder prune [-a] [-f] [--filter until=DURATION|TIMESTAMP|id=ID|type=regular|exec.cachemount]
                        [--keep-storage SIZE]
"""

from __future__ import annotations

import sys

from ketch.cli import format as fmt
from ketch.cli.containers import _parser, command

_WARN = "WARNING! This will remove all dangling build cache. Are you sure you want to continue? [y/N] "
_WARN_ALL = "WARNING! This will remove all build cache. Are you sure you want to continue? [y/N] "


def _prune_args(p):
    p.add_argument("-a", "--all", action="store_true", help="remove all unused build cache, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="until=DURATION|TIMESTAMP, id=ID, type=TYPE")
    p.add_argument("--keep-storage", default="0", help="amount of disk space to keep for the cache (e.g. 1g)")
    p.set_defaults(func=cmd_prune)


@command("builder prune")
def cmd_prune(args, ctx):
    from ketch.errors import InvalidArgument
    from ketch.units import ram_in_bytes
    pairs = []
    for f in args.filter:
        k, sep, v = f.partition("=")
        if not sep or k not in ("until", "id", "type"):
            raise InvalidArgument(f"invalid filter {f!r} (until, id, type)")
        pairs.append((k, v))
    keep = ram_in_bytes(args.keep_storage) if args.keep_storage not in ("", "0") else 0
    if not args.force:
        sys.stdout.write(_WARN_ALL if args.all else _WARN)
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() != "y":
            return 0
    out = ctx.client.build_prune(args.all, pairs or None, keep) or {}
    deleted = out.get("CachesDeleted") or []
    if deleted:
        print("Deleted build cache objects:")
        for i in deleted:
            print(i)
        print()
    print(f"Total reclaimed space: {fmt.human_size(out.get('SpaceReclaimed') or 0)}")
    return 0


def register(sub, name, help_):
    p = sub.add_parser(name, help=help_)
    bsub = p.add_subparsers(dest="builder_command", metavar="COMMAND")
    _prune_args(_parser(bsub, "prune", "Remove build cache", title="builder prune"))
