"""`ketch`: the command table and the global options.

Each command lives in a module named in COMMANDS; only the module of the command being run
is imported (the launcher starts ``python3 -I -S``: keep start-up lean). A module provides
``register(subparsers, name, help)``: it adds the parser for ``name`` and sets
``func(args, ctx) -> exit status`` with ``set_defaults``. To add commands, add a module and
its names to COMMANDS.

Every command goes through ketchd's API (``ctx.client``, a ketch.client.Client): the daemon
is ``-H/--host`` (env KETCH_HOST, default unix:///run/ketch/ketch.sock), the same one for
containers and images. ``--data-root`` and ``--insecure-registry`` are still accepted for
old scripts and ignored: the daemon owns its data root and its registry settings.
Errors print ``Error response from daemon: <message>`` (the daemon refused) or ``Error:
<message>`` on stderr and exit 1; a daemon that cannot be reached is one line too; usage
errors exit 2.
"""

import os
import sys

# name -> (module, one-line help)
COMMANDS = {
    "build": ("ketch.cli.build", "Build an image from a Dockerfile"),
    "builder": ("ketch.cli.builder", "Manage builds (prune the build cache)"),
    "pull": ("ketch.cli.images", "Download an image from a registry"),
    "push": ("ketch.cli.images", "Upload an image to a registry"),
    "images": ("ketch.cli.images", "List images"),
    "image": ("ketch.cli.images", "Manage images"),
    "history": ("ketch.cli.images", "Show the history of an image"),
    "tag": ("ketch.cli.images", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "rmi": ("ketch.cli.images", "Remove one or more images"),
    "save": ("ketch.cli.images", "Save images to a tar archive (docker-archive or oci-archive)"),
    "load": ("ketch.cli.images", "Load images from a tar archive"),
    "import": ("ketch.cli.images", "Import a root file system tarball as an image"),
    "search": ("ketch.cli.images", "Search a registry index for images (ketchd has none configured)"),
    "login": ("ketch.cli.registry", "Log in to a registry"),
    "logout": ("ketch.cli.registry", "Log out from a registry"),
    "system": ("ketch.cli.sysinfo", "Manage Ketch (check, df, info, events)"),
    "network": ("ketch.cli.networks", "Manage networks"),
    "volume": ("ketch.cli.volumes", "Manage volumes"),
    "port": ("ketch.cli.networks", "List port mappings or a specific mapping for the container"),
    # container commands, through ketchd (ketch.client)
    "run": ("ketch.cli.containers", "Create and run a new container from an image"),
    "create": ("ketch.cli.containers", "Create a new container"),
    "start": ("ketch.cli.containers", "Start one or more stopped containers"),
    "stop": ("ketch.cli.containers", "Stop one or more running containers"),
    "restart": ("ketch.cli.containers", "Restart one or more containers"),
    "kill": ("ketch.cli.containers", "Kill one or more running containers"),
    "rm": ("ketch.cli.containers", "Remove one or more containers"),
    "ps": ("ketch.cli.containers", "List containers"),
    "logs": ("ketch.cli.containers", "Fetch the logs of a container"),
    "exec": ("ketch.cli.containers", "Execute a command in a running container"),
    "attach": ("ketch.cli.containers", "Attach local standard input, output, and error streams to a running container"),
    "wait": ("ketch.cli.containers", "Block until one or more containers stop, then print their exit codes"),
    "inspect": ("ketch.cli.containers", "Return low-level information on containers or images"),
    "top": ("ketch.cli.containers", "Display the running processes of a container"),
    "stats": ("ketch.cli.containers", "Display a live stream of container resource usage statistics"),
    "pause": ("ketch.cli.containers", "Pause all processes within one or more containers"),
    "unpause": ("ketch.cli.containers", "Unpause all processes within one or more containers"),
    "rename": ("ketch.cli.containers", "Rename a container"),
    "update": ("ketch.cli.containers", "Update configuration of one or more containers"),
    "cp": ("ketch.cli.containers", "Copy files/folders between a container and the local filesystem"),
    "diff": ("ketch.cli.changes", "Inspect changes to files or directories on a container's filesystem"),
    "commit": ("ketch.cli.changes", "Create a new image from a container's changes"),
    "export": ("ketch.cli.changes", "Export a container's filesystem as a tar archive"),
    "container": ("ketch.cli.containers", "Manage containers"),
    "events": ("ketch.cli.sysinfo", "Get real time events from the server"),
    "info": ("ketch.cli.sysinfo", "Display system-wide information"),
    "version": ("ketch.cli.sysinfo", "Show the Ketch version information"),
    "completion": ("ketch.cli.completion", "Generate the shell completion script (bash, zsh)"),
    "help": (None, "Show the help of a command (ketch help CMD is ketch CMD --help)"),
}

# docker's top-level help lists these first, as "Management Commands"
MANAGEMENT = ("container", "image", "network", "system", "volume")


class Context:
    """What commands share: the options and a lazily made daemon client."""

    def __init__(self, args):
        self.host = getattr(args, "host", None)
        self.debug = args.debug
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from ketch.client import Client
            self._client = Client(self.host)
        return self._client


def _command_of(argv):
    """The first positional word (skipping global options and their values)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--data-root", "--insecure-registry", "-H", "--host"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a
    return None


_columns = None


def _help_width() -> int:
    """shutil.get_terminal_size().columns - 2, as argparse's HelpFormatter computes it, without
    importing shutil (~2 ms: it pulls in bz2, lzma, fnmatch); argparse asks on every add_argument."""
    global _columns
    if _columns is None:
        try:
            cols = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            cols = 0
        if cols <= 0:
            try:
                cols = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]  # None: caught below
            except (AttributeError, ValueError, OSError):
                cols = 0
        _columns = cols or 80
    return _columns - 2


def _parser_class():
    import argparse

    class Formatter(argparse.HelpFormatter):
        def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
            super().__init__(prog, indent_increment, max_help_position, _help_width() if width is None else width)

    class Parser(argparse.ArgumentParser):
        """An ArgumentParser whose help formatter finds the width without shutil; subparsers inherit it."""

        def __init__(self, *a, formatter_class=Formatter, allow_abbrev=False, **kw):
            # never an abbreviated long flag (--priv is not --privileged): allow_abbrev=False on
            # every parser, subparsers included (they are made with this class)
            super().__init__(*a, formatter_class=formatter_class, allow_abbrev=allow_abbrev, **kw)
    return Parser


def build_parser(only=None):
    """The parser; with ``only`` (a known command) just that command's, the others left out
    (each placeholder parser costs a few gettext look-ups; `ketch --help` builds them all)."""
    p = _parser_class()(prog="ketch", description="Ketch: a container engine")
    p.add_argument("--data-root", help="ignored (kept for old scripts): the daemon owns its data root")
    p.add_argument("--insecure-registry", action="append", metavar="HOST[:PORT]",
                   help="ignored (kept for old scripts): the daemon's insecure-registries apply")
    p.add_argument("-H", "--host", help="the ketchd socket (default $KETCH_HOST or unix:///run/ketch/ketch.sock)")
    p.add_argument("-D", "--debug", action="store_true", help="print tracebacks on errors")
    import ketch
    p.add_argument("-v", "--version", action="version", version=f"Ketch version {ketch.__version__}",
                   help="print version information and quit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in COMMANDS.items():
        if mod is None:                           # `help`: main() answers it
            if only is None or name == only:
                sub.add_parser(name, help=help_).add_argument("topic", nargs="*", metavar="COMMAND")
        elif only is None or name == only:
            import importlib
            importlib.import_module(mod).register(sub, name, help_)
    if only is None:
        p.format_help = lambda: _grouped_help(p)
    return p


def _grouped_help(p) -> str:
    """`ketch --help` as docker's: usage, Management Commands, Commands, then the global options."""
    width = max(len(n) for n in COMMANDS) + 2
    mgmt = [f"  {n.ljust(width)}{COMMANDS[n][1]}" for n in MANAGEMENT]
    rest = [f"  {n.ljust(width)}{COMMANDS[n][1]}" for n in sorted(COMMANDS) if n not in MANAGEMENT]
    opts = []
    for a in p._actions:
        if not a.option_strings:
            continue
        flags = ", ".join(a.option_strings) + (f" {a.metavar or a.dest.upper()}" if a.nargs != 0 else "")
        opts.append(f"  {flags.ljust(30)}{a.help or ''}")
    return "\n".join(["Usage:  ketch [OPTIONS] COMMAND", "", "Ketch: a container engine", "",
                      "Management Commands:", *mgmt, "", "Commands:", *rest, "", "Global Options:", *opts, "",
                      "Run 'ketch COMMAND --help' for more information on a command.", ""])


def describe(e) -> str:
    """One line for an error: the daemon's refusals as the docker CLI prints them; a daemon that
    that is not there as the client says it (the same as the container commands print them)."""
    from ketch.client import DaemonNotRunning
    if isinstance(e, DaemonNotRunning) or getattr(e, "plain", False):  # plain: a template's error, Go's words
        return str(e)
    if getattr(e, "status", None):
        return f"Error response from daemon: {e}"
    return f"Error: {e}"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = _command_of(argv)
    if cmd == "help":  # `ketch help CMD [SUB]` is `ketch CMD [SUB] --help`; `ketch help` the list
        i = argv.index("help")
        topic = argv[i + 1:]
        if not topic:
            print(build_parser().format_help(), end="")
            return 0
        return main(argv[:i] + topic + ["--help"])
    parser = build_parser(cmd if cmd in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if args.command is not None:  # a group without its subcommand: the full command list
            parser = build_parser()
        parser.print_help(sys.stderr if args.command is None else sys.stdout)
        return 2 if args.command is None else 0
    ctx = Context(args)
    from ketch.errors import KetchError
    try:
        rc = args.func(args, ctx)
        return rc or 0
    except KetchError as e:
        if ctx.debug:
            import traceback
            traceback.print_exc()
        print(describe(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
