"""`ketch`: the command table and the global options.

Each command lives in a module named in COMMANDS; only the module of the command being run
is imported (the launcher starts ``python3 -I -S``: keep start-up lean). A module provides
``register(subparsers, name, help)``: it adds the parser for ``name`` and sets
``func(args, ctx) -> exit status`` with ``set_defaults``. To add commands (e.g. the container
commands through the daemon client), add a module and its names to COMMANDS.

Global options: ``--data-root`` (env KETCH_DATA_ROOT, default /var/lib/ketch) and
``--insecure-registry`` (repeatable; also "insecure-registries" in /etc/ketch/daemon.json).
Errors print ``Error: <message>`` on stderr and exit 1; usage errors exit 2.
"""

import os
import sys

# name -> (module, one-line help)
COMMANDS = {
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
    "login": ("ketch.cli.registry", "Log in to a registry"),
    "logout": ("ketch.cli.registry", "Log out from a registry"),
    "system": ("ketch.cli.sysinfo", "Manage Ketch (check, df, info, events)"),
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
    "container": ("ketch.cli.containers", "Manage containers"),
    "events": ("ketch.cli.sysinfo", "Get real time events from the server"),
    "info": ("ketch.cli.sysinfo", "Display system-wide information"),
    "version": ("ketch.cli.sysinfo", "Show the Ketch version information"),
}

DEFAULT_DATA_ROOT = "/var/lib/ketch"
DAEMON_JSON = "/etc/ketch/daemon.json"


class Context:
    """What commands share: options and a lazily made ImageService."""

    def __init__(self, args):
        self.data_root = args.data_root or os.environ.get("KETCH_DATA_ROOT") or DEFAULT_DATA_ROOT
        self.insecure = list(args.insecure_registry or [])
        self.debug = args.debug
        self._images = None
        try:
            with open(os.environ.get("KETCH_DAEMON_JSON", DAEMON_JSON), encoding="utf-8") as f:
                from ketch import _json
                cfg = _json.load(f)
            self.insecure += [r for r in cfg.get("insecure-registries", []) if isinstance(r, str)]
        except (OSError, ValueError, AttributeError):
            pass

    @property
    def images(self):
        if self._images is None:
            from ketch.images.service import ImageService
            self._images = ImageService(self.data_root, insecure=self.insecure)
        return self._images


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
                cols = os.get_terminal_size(sys.__stdout__.fileno()).columns
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

        def __init__(self, *a, formatter_class=Formatter, **kw):
            super().__init__(*a, formatter_class=formatter_class, **kw)
    return Parser


def build_parser(only=None):
    """The parser; with ``only`` (a known command) just that command's, the others left out
    (each placeholder parser costs a few gettext look-ups; `ketch --help` builds them all)."""
    p = _parser_class()(prog="ketch", description="Ketch: a container engine")
    p.add_argument("--data-root", help=f"root of Ketch's state (default $KETCH_DATA_ROOT or {DEFAULT_DATA_ROOT})")
    p.add_argument("--insecure-registry", action="append", metavar="HOST[:PORT]",
                   help="a registry reached over plain http (repeatable)")
    p.add_argument("-H", "--host", help="the ketchd socket (default $KETCH_HOST or unix:///run/ketch/ketch.sock)")
    p.add_argument("-D", "--debug", action="store_true", help="print tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    registered = set()
    for name, (mod, help_) in COMMANDS.items():
        if only is None or name == only:
            import importlib
            importlib.import_module(mod).register(sub, name, help_)
            registered.add(name)
        elif only is None:
            sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = _command_of(argv)
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
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
