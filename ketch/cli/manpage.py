"""Man pages for `ketch` and each of its commands, written as roff from the parser
(ketch/cli/parsertree.py): `make man` runs ``python -m ketch.cli.manpage build/man`` and
leaves ketch.1, ketch-run.1, ketch-container-ls.1, ... there (read one with ``man -l``)."""

from __future__ import annotations

import os
import sys


def esc(s: str) -> str:
    """Text for roff: backslashes and dashes escaped, no line that starts as a request."""
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + ln if ln[:1] in (".", "'") else ln for ln in s.split("\n"))


def page_name(cmd) -> str:
    return "-".join(["ketch", *cmd.path])


def _usage_tail(cmd) -> str:
    u = cmd.usage
    if u.startswith("usage:"):
        u = u[len("usage:"):].strip()
    prefix = cmd.name
    i = u.find(prefix)
    return u[i + len(prefix):].strip() if i >= 0 else u


def render(cmd, version: str) -> str:
    name = page_name(cmd)
    out = [f'.TH "{name.upper()}" "1" "" "ketch {version}" "Ketch Manual"',
           ".SH NAME", f"{esc(name)} \\- {esc(cmd.help or 'a container engine')}",
           ".SH SYNOPSIS", f".B {esc(cmd.name)}", esc(" ".join(_usage_tail(cmd).split()))]
    out += [".SH DESCRIPTION", esc(cmd.help or cmd.name)]
    if cmd.subcommands:
        out.append(".SH COMMANDS")
        for sub_name, sub in cmd.subcommands.items():
            out += [".TP", f".B {esc(sub_name)}", esc(sub.help) + f" (see \\fB{esc(page_name(sub))}\\fR(1))"]
    if cmd.options:
        out.append(".SH OPTIONS")
        for o in cmd.options:
            flags = ", ".join(f"\\fB{esc(f)}\\fR" + (f" \\fI{esc(o.metavar)}\\fR" if o.takes_value else "")
                              for f in o.flags)
            text = o.help
            if o.choices:
                text += f" (one of: {', '.join(o.choices)})"
            out += [".TP", flags, esc(text or "")]
    see = ["ketch(1)"] if cmd.path else []
    if cmd.path[:-1]:
        see.append(f"{page_name(type(cmd)(cmd.path[:-1], '', ''))}(1)")
    if see:
        out += [".SH SEE ALSO", esc(", ".join(see))]
    return "\n".join(out) + "\n"


def write_all(outdir: str) -> list[str]:
    import ketch
    from ketch.cli.parsertree import commands, tree
    os.makedirs(outdir, exist_ok=True)
    written = []
    for cmd in commands(tree()):
        path = os.path.join(outdir, page_name(cmd) + ".1")
        with open(path, "w", encoding="utf-8") as f:
            f.write(render(cmd, ketch.__version__))
        written.append(path)
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    outdir = argv[0] if argv else "build/man"
    pages = write_all(outdir)
    print(f"{len(pages)} man pages in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
