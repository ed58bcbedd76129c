"""Help in runc's shape (urfave/cli's layout: NAME, USAGE, COMMANDS, OPTIONS), so a script that reads
`runc --help`, `runc kill -h` or `runc help kill` reads ketch-runtime's the same way. Imported only
when help is asked for."""

from __future__ import annotations

_BUNDLE = ("--bundle value, -b value", "path to the root of the bundle directory, defaults to the current directory")
_CONSOLE = ("--console-socket value", "path to an AF_UNIX socket which will receive a file descriptor referencing "
            "the master end of the console's pseudoterminal")
_PIDFILE = ("--pid-file value", "specify the file to write the process id to")
_NOPIVOT = ("--no-pivot", "do not use pivot root to jail process inside rootfs.  This should be used whenever "
            "the rootfs is on top of a ramdisk")
_KEYRING = ("--no-new-keyring", "do not create a new session keyring for the container.  This will cause the "
            "container to inherit the calling processes session key")
_FDS = ("--preserve-fds value", "Pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N in "
        "total) (default: 0)")
_CONFIG = ("--config value, -f value", "path to the config file, relative to the bundle (crun's; default: config.json)")
_FORMAT = ("--format value, -f value", 'select one of: table or json (default: "table")')

# command: (usage after the name, one line of what it does, options)
COMMANDS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "checkpoint": ("<container-id>", "checkpoint a running container (not supported: no CRIU)", []),
    "create": ("[command options] <container-id>", "create a container",
               [_BUNDLE, _CONSOLE, _PIDFILE, _NOPIVOT, _KEYRING, _FDS, _CONFIG]),
    "delete": ("[command options] <container-id>",
               "delete any resources held by the container often used with detached container",
               [("--force, -f", "Forcibly deletes the container if it is still running (uses SIGKILL)")]),
    "events": ("[command options] <container-id>",
               "display container events such as OOM notifications, cpu, memory, and IO usage statistics",
               [("--interval value", "set the stats collection interval (default: 5s)"),
                ("--stats", "display the container's stats then exit")]),
    "exec": ("[command options] <container-id> <command> [command options]  || -p process.json <container-id>",
             "execute new process inside the container",
             [_CONSOLE, ("--cwd value", "current working directory in the container"),
              ("--env value, -e value", "set environment variables"), ("--tty, -t", "allocate a pseudo-TTY"),
              ("--user value, -u value", "UID (format: <uid>[:<gid>])"),
              ("--additional-gids value, -g value", "additional gids"),
              ("--process value, -p value", "path to the process.json"),
              ("--detach, -d", "detach from the container's process"), _PIDFILE,
              ("--process-label value", "set the asm process label for the process commonly used with selinux"),
              ("--apparmor value", "set the apparmor profile for the process"),
              ("--no-new-privs", "set the no new privileges value for the process"),
              ("--cap value, -c value", "add a capability to the bounding set for the process"), _FDS,
              ("--cgroup value", "run the process in an (existing) sub-cgroup(s). Format is [<controller>:]<cgroup>."),
              ("--ignore-paused", "allow exec in a paused container")]),
    "kill": ("[command options] <container-id> [signal]",
             "kill sends the specified signal (default: SIGTERM) to the container's init process",
             [("--all, -a", "send the specified signal to all processes inside the container")]),
    "list": ("[command options]", "lists containers started by ketch-runtime with the given root",
             [_FORMAT, ("--quiet, -q", "display only container IDs")]),
    "pause": ("<container-id>", "pause suspends all processes inside the container", []),
    "ps": ("[command options] <container-id> [ps options]", "ps displays the processes running inside a container",
           [_FORMAT]),
    "restore": ("[command options] <container-id>",
                "restore a container from a previous checkpoint (not supported: no CRIU)", []),
    "resume": ("<container-id>", "resumes all processes that have been previously paused", []),
    "run": ("[command options] <container-id>", "create and run a container",
            [_BUNDLE, _CONSOLE, ("--detach, -d", "detach from the container's process"),
             ("--keep", "do not delete the container after it exits"), _PIDFILE,
             ("--no-subreaper", "disable the use of the subreaper used to reap reparented processes"),
             _NOPIVOT, _KEYRING, _FDS, _CONFIG]),
    "spec": ("[command options] [arguments...]", "create a new specification file",
             [("--bundle value, -b value", "path to the root of the bundle directory"),
              ("--rootless", "generate a configuration for a rootless container")]),
    "start": ("<container-id>", "executes the user defined process in a created container", []),
    "state": ("<container-id>", "output the state of a container", []),
    "update": ("[command options] <container-id>", "update container resource constraints",
               [("--resources value, -r value", "path to the file containing the resources to update or '-' to "
                 "read from the standard input"),
                ("--blkio-weight value", "Specifies per cgroup weight, range is from 10 to 1000 (default: 0)"),
                ("--cpu-period value", "CPU CFS period to be used for hardcapping (in usecs). 0 to use system default"),
                ("--cpu-quota value", "CPU CFS hardcap limit (in usecs). Allowed cpu time in a given period"),
                ("--cpu-share value", "CPU shares (relative weight vs. other containers)"),
                ("--cpu-rt-period value", "CPU realtime period to be used for hardcapping (in usecs). 0 to use "
                 "system default"),
                ("--cpu-rt-runtime value", "CPU realtime hardcap limit (in usecs). Allowed cpu time in a given period"),
                ("--cpuset-cpus value", "CPU(s) to use"), ("--cpuset-mems value", "Memory node(s) to use"),
                ("--memory value", "Memory limit (in bytes)"),
                ("--memory-reservation value", "Memory reservation or soft_limit (in bytes)"),
                ("--memory-swap value", "Total memory usage (memory + swap); set '-1' to enable unlimited swap"),
                ("--pids-limit value", "Maximum number of pids allowed in the container (default: 0)")]),
    "features": ("[arguments...]", "show the enabled features", []),
    "help, h": ("[command]", "Shows a list of commands or help for one command", []),
}

_BUNDLE_TEXT = ("instance of a container for a bundle. The bundle is a directory with a specification\n"
                "file named \"config.json\" and a root filesystem. The args parameter of the\n"
                "specification is what runs when the container is started; see \"ketch-runtime spec\n"
                "--help\".")
DESCRIPTIONS = {
    "create": "The create command creates an " + _BUNDLE_TEXT,
    "run": "The run command creates, starts and waits for an " + _BUNDLE_TEXT,
    "events": "The events command displays information about the container. By default the\n"
              "information is displayed once every 5 seconds.",
    "spec": "The spec command creates the new specification file named \"config.json\" for the\n"
            "bundle, as `runc spec` writes it for this host: a starter file, to be edited.",
}
EXAMPLES = {
    "exec": "To run sh in the container \"box\":\n\n       # ketch-runtime exec -t box sh",
    "kill": "To send KILL to the init process of the container \"box\":\n\n       # ketch-runtime kill box KILL",
    "delete": "To delete the container \"box\":\n\n       # ketch-runtime delete box",
    "spec": "To run busybox's sh in a new bundle:\n\n       # mkdir -p bundle/rootfs && ketch-runtime spec -b bundle",
}

GLOBAL = [("--debug", "enable debug logging"),
          ("--log value", "set the log file to write ketch-runtime logs to (default is '/dev/stderr')"),
          ("--log-format value", "set the log format ('text' (default), or 'json') (default: \"text\")"),
          ("--root value", "root directory for storage of container state (this should be located in tmpfs) "
                           "(default: \"/run/ketch-runtime\")"),
          ("--systemd-cgroup", "enable systemd cgroup support, expects cgroupsPath to be of form "
                               "\"slice:prefix:name\" for e.g. \"system.slice:runc:434234\""),
          ("--cgroup-manager value", "cgroupfs, systemd or disabled (crun's)"),
          ("--help, -h", "show help"), ("--version, -v", "print the version")]


def _table(rows: list[tuple[str, str]]) -> str:
    w = max(len(a) for a, _ in rows)
    return "".join(f"   {a.ljust(w)}  {b}\n" for a, b in rows)


def main_help(version: str) -> str:
    cmds = [(k, v[1]) for k, v in COMMANDS.items()]
    return ("NAME:\n   ketch-runtime - Open Container Initiative runtime\n\n"
            "ketch-runtime is a command line client for running applications packaged according to\n"
            "the Open Container Initiative (OCI) format and is a compliant implementation of the\n"
            "Open Container Initiative specification, with runc's command line.\n\n"
            "USAGE:\n   ketch-runtime [global options] command [command options] [arguments...]\n\n"
            f"VERSION:\n   {version}\n\nCOMMANDS:\n{_table(cmds)}\nGLOBAL OPTIONS:\n{_table(GLOBAL)}")


def command_help(cmd: str) -> str | None:
    entry = COMMANDS.get("help, h" if cmd in ("help", "h") else cmd)
    if entry is None:
        return None
    usage, what, opts = entry
    out = f"NAME:\n   ketch-runtime {cmd} - {what}\n\nUSAGE:\n   ketch-runtime {cmd} {usage}\n"
    if cmd in DESCRIPTIONS:
        out += f"\nDESCRIPTION:\n   {DESCRIPTIONS[cmd]}\n"
    if cmd in EXAMPLES:
        out += f"\nEXAMPLE:\n{EXAMPLES[cmd]}\n"
    if opts:
        out += f"\nOPTIONS:\n{_table(opts)}"
    return out
