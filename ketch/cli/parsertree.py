"""The `ketch` command tree as data, read from the argparse parser: what shell completion
(ketch/cli/completion.py) and the man pages (ketch/cli/manpage.py) are generated from, so
they never drift from the flags the CLI really has. Imported only by those two."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass
class Option:
    flags: list[str]             # ["-m", "--memory"]
    help: str
    takes_value: bool
    metavar: str
    choices: list[str] | None


@dataclass
class Command:
    path: list[str]              # [] for `ketch`, ["container", "ls"]
    help: str
    usage: str
    options: list[Option] = field(default_factory=list)
    positionals: list[str] = field(default_factory=list)
    subcommands: dict[str, Command] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return " ".join(["ketch", *self.path])


def _option(a: argparse.Action) -> Option:
    takes = a.nargs != 0
    metavar = a.metavar if isinstance(a.metavar, str) else (a.dest.upper() if takes else "")
    help_ = "" if a.help in (None, argparse.SUPPRESS) else str(a.help)
    return Option(list(a.option_strings), help_, takes, metavar, [str(c) for c in a.choices] if a.choices else None)


def walk(parser: argparse.ArgumentParser, path: list[str] | None = None, help_: str = "") -> Command:
    path = path or []
    cmd = Command(path, help_ or (parser.description or ""), parser.format_usage().strip())
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: str(c.help or "") for c in a._choices_actions}
            seen: set[int] = set()
            for name, sub in a.choices.items():
                if id(sub) in seen and name not in helps:
                    continue        # an alias
                seen.add(id(sub))
                cmd.subcommands[name] = walk(sub, [*path, name], helps.get(name, ""))
        elif a.option_strings:
            cmd.options.append(_option(a))
        else:
            cmd.positionals.append(a.metavar if isinstance(a.metavar, str) else a.dest.upper())
    return cmd


def tree() -> Command:
    """The whole tree, every command's parser built."""
    from ketch.cli.main import build_parser
    return walk(build_parser(), [], "Ketch: a container engine")


def commands(root: Command):
    """Every command, depth first (the root first)."""
    yield root
    for sub in root.subcommands.values():
        yield from commands(sub)
