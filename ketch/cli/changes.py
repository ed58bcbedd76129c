"""`ketch diff`, `ketch commit`, `ketch export`: a container's copy-on-write layer, through ketchd.

    ketch diff CONTAINER                                   C /etc, A /etc/new, D /etc/gone (docker's letters)
    ketch commit [-a AUTHOR] [-c CHANGE]... [-m MESSAGE] [-p|--pause=true|false] CONTAINER [REPO[:TAG]]
    ketch export [-o FILE] CONTAINER                       the flattened root file system as a tar

Output and exit codes as docker's: commit prints the new image's ID, export refuses to write a
tar to a terminal; usage errors exit 125, the daemon's refusals 1.
"""

import os
import sys

from ketch.cli.containers import _client, _parser, command

_LETTER = {0: "C", 1: "A", 2: "D"}
_BOOL = {"true": True, "1": True, "t": True, "false": False, "0": False, "f": False}


@command("diff")
def cmd_diff(args, ctx):
    for ch in _client(args).container_changes(args.container):
        print(f"{_LETTER.get(ch.get('Kind'), '?')} {ch.get('Path')}")
    sys.stdout.flush()
    return 0


def _split_repo_tag(ref: str) -> tuple[str, str]:
    """"name:tag" -> (name, tag); a ':' before the last '/' is a registry port, not a tag."""
    if "@" in ref:
        return ref, ""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, ""


@command("commit")
def cmd_commit(args, ctx):
    from ketch.cli.runopts import FlagError
    positional = list(args.args)
    pause = args.pause
    if pause.lower() not in _BOOL:
        # `-p CONTAINER`: -p took the container as its value; docker's -p never takes one
        positional.insert(0, pause)
        pause = "true"
    if not 1 <= len(positional) <= 2:
        raise FlagError('"commit" requires at least 1 and at most 2 arguments.\nUsage:  ketch commit [OPTIONS] '
                        'CONTAINER [REPOSITORY[:TAG]]')
    repo, tag = _split_repo_tag(positional[1]) if len(positional) == 2 else ("", "")
    res = _client(args).container_commit(positional[0], repo=repo or None, tag=tag or None,
                                         comment=args.message or None, author=args.author or None,
                                         pause=_BOOL[pause.lower()], changes=args.change or [])
    print(res.get("Id", ""), flush=True)
    return 0


@command("export")
def cmd_export(args, ctx):
    from ketch.cli.runopts import FlagError
    if not args.output and sys.stdout.isatty():
        raise FlagError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = _client(args).container_export(args.container)
    try:
        if args.output:
            tmp = args.output + ".tmp-ketch"
            with open(tmp, "wb") as f:
                while chunk := resp.read(1 << 16):
                    f.write(chunk)
            os.replace(tmp, args.output)
        else:
            out = sys.stdout.buffer
            while chunk := resp.read(1 << 16):
                out.write(chunk)
            out.flush()
    finally:
        resp.close()
    return 0


def register(sub, name, help_):
    p = _parser(sub, name, help_)
    if name == "diff":
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_diff)
    elif name == "commit":
        p.add_argument("-a", "--author", help='author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
        p.add_argument("-c", "--change", action="append", help="apply Dockerfile instruction to the created image")
        p.add_argument("-m", "--message", help="commit message")
        p.add_argument("-p", "--pause", nargs="?", const="true", default="true", metavar="true|false",
                       help="pause container during commit (default true)")
        p.add_argument("args", nargs="*", metavar="CONTAINER [REPOSITORY[:TAG]]")
        p.set_defaults(func=cmd_commit)
    elif name == "export":
        p.add_argument("-o", "--output", help="write to a file, instead of STDOUT")
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_export)
    else:
        raise ValueError(name)
