"""Drive conmon (containers/conmon, API version 1) for containers and exec sessions.

The protocol, as podman uses it:

- ``_OCI_SYNCPIPE``: conmon writes one JSON line ``{"data": PID}`` once ``<runtime> create``
  (or ``exec``) has succeeded, ``{"data": -1, "message": "..."}`` if it failed; for exec
  sessions a second line carries the exit code.
- ``_OCI_STARTPIPE`` (exec with attach only): conmon waits for a first write before it
  forks, and for a second one before running ``<runtime> exec``, so that the caller can
  connect to the attach socket first and lose no output.
- ``_OCI_ATTACHPIPE``: conmon says ``{"data": 0}`` when the attach socket is listening.
- ``<bundle>/attach``: SOCK_SEQPACKET; every packet conmon sends starts with a byte
  naming the stream (2 stdout, 3 stderr); what the client sends goes to stdin, and the
  client's EOF closes stdin unless ``--leave-stdin-open``.
- ``<bundle>/ctl``: a fifo taking ``"1 H W\\n"`` (resize the pty) and ``"2 0 0\\n"``
  (reopen the log file, after ketchd rotated it).
- ``<exit-dir>/<cid>`` and ``<persist-dir>/exit``: the exit code (128+N for a signal);
  ``<persist-dir>/oom``: present when the container's cgroup saw an OOM kill.
"""

import asyncio
import json
import logging
import os
import socket
import subprocess
from dataclasses import dataclass

from ketch.errors import Internal, NotFound, Unavailable

log = logging.getLogger("ketch.monitor")

# conmon's stream bytes on the attach socket
STDOUT_PIPE = 2
STDERR_PIPE = 3


class RuntimeFailed(Exception):
    """`<runtime> create/exec` failed; the message is the runtime's own."""


@dataclass
class MonitorPaths:
    """Where conmon keeps one container's (or one exec session's) files."""

    bundle: str
    pid_file: str
    conmon_pid_file: str
    exit_dir: str
    persist_dir: str
    log_path: str | None
    # conmon's own bound on the live log file (0: none): past it conmon starts the file afresh
    log_size_max: int = 0

    @classmethod
    def under(cls, directory: str, bundle: str, log_path: str | None, log_size_max: int = 0) -> "MonitorPaths":
        return cls(
            bundle=bundle,
            pid_file=os.path.join(directory, "pidfile"),
            conmon_pid_file=os.path.join(directory, "conmon.pid"),
            exit_dir=os.path.join(directory, "exits"),
            persist_dir=os.path.join(directory, "persist"),
            log_path=log_path,
            log_size_max=log_size_max,
        )

    def exit_file(self, cid: str) -> str:
        return os.path.join(self.exit_dir, cid)


class _PipeLines:
    """Read JSON lines from a pipe without blocking the event loop."""

    def __init__(self, fd: int):
        self.fd = fd
        os.set_blocking(fd, False)
        self.buf = b""
        self.eof = False
        self.waiter: asyncio.Future | None = None
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(fd, self._readable)

    def _readable(self):
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            self.loop.remove_reader(self.fd)
        self.buf += data
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(None)

    async def message(self) -> dict | None:
        while b"\n" not in self.buf:
            if self.eof:
                return None
            self.waiter = self.loop.create_future()
            await self.waiter
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise Internal(f"conmon sync pipe: bad message {line[:200]!r}") from None

    def close(self):
        if not self.eof:
            self.loop.remove_reader(self.fd)
        os.close(self.fd)


def _base_args(conmon: str, runtime: str, runtime_args: list[str], cid: str, uuid: str, name: str,
               paths: MonitorPaths, terminal: bool, stdin: bool, leave_stdin_open: bool) -> list[str]:
    args = [conmon, "--api-version", "1", "-c", cid, "-u", uuid, "-n", name, "-r", runtime,
            "-b", paths.bundle, "-p", paths.pid_file, "--conmon-pidfile", paths.conmon_pid_file,
            "--exit-dir", paths.exit_dir, "--persist-dir", paths.persist_dir, "--full-attach",
            "--log-level", "warning", "--syslog"]
    args += ["-l", f"k8s-file:{paths.log_path}" if paths.log_path else "none"]
    if paths.log_path and paths.log_size_max > 0:
        args += ["--log-size-max", str(paths.log_size_max)]
    for a in runtime_args:
        args += ["--runtime-arg", a]
    if terminal:
        args.append("-t")
    if stdin:
        args.append("-i")
    if leave_stdin_open:
        args.append("--leave-stdin-open")
    return args


async def _spawn(args: list[str], pass_fds: tuple[int, ...], env_fds: dict[str, int], stderr_path: str,
                 cwd: str):
    env = {"PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")}
    env.update({k: str(v) for k, v in env_fds.items()})
    with open(stderr_path, "ab") as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=pass_fds, env=env,
                start_new_session=True, cwd=cwd)  # conmon drops an "oom" file in its cwd
        except FileNotFoundError:
            raise Unavailable(f"start monitor `{args[0]}`: not found") from None
    # the first conmon process exits as soon as it has forked its monitor
    rc = await proc.wait()
    if rc != 0:
        raise Internal(f"start monitor for `{args[args.index('-c') + 1]}`: conmon exited {rc}")


async def launch_container(*, conmon: str, runtime: str, runtime_args: list[str], cid: str, name: str,
                           paths: MonitorPaths, terminal: bool, stdin: bool, leave_stdin_open: bool,
                           stderr_path: str) -> int:
    """Have conmon run `<runtime> create` for the bundle; return the container's pid.

    The container is left in the runtime's `created` state: the caller connects any
    attach clients, then runs `<runtime> start`.
    """
    for d in (paths.exit_dir, paths.persist_dir):
        os.makedirs(d, exist_ok=True)
    for f in (paths.exit_file(cid), os.path.join(paths.persist_dir, "exit"),
              os.path.join(paths.persist_dir, "oom"), os.path.join(paths.bundle, "oom"), paths.pid_file):
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass
    r, w = os.pipe2(os.O_CLOEXEC)
    reader = None
    try:
        args = _base_args(conmon, runtime, runtime_args, cid, cid, name, paths, terminal, stdin,
                          leave_stdin_open)
        await _spawn(args, (w,), {"_OCI_SYNCPIPE": w}, stderr_path, paths.bundle)
        os.close(w)
        w = -1
        reader = _PipeLines(r)
        r = -1
        msg = await reader.message()
    finally:
        if w >= 0:
            os.close(w)
        if reader:
            reader.close()
        elif r >= 0:
            os.close(r)
    if msg is None:
        raise Internal(f"create container `{cid}`: conmon exited without a word (see {stderr_path})")
    pid = int(msg.get("data", -1))
    if pid <= 0:
        raise RuntimeFailed(runtime_message(msg.get("message") or "runtime create failed"))
    return pid


class ExecSession:
    """One `<runtime> exec` under conmon; `pid` once started, `exit_code()` awaits the end."""

    def __init__(self, reader: _PipeLines, paths: MonitorPaths, cid: str):
        self.reader = reader
        self.paths = paths
        self.cid = cid
        self.pid = 0

    async def exit_code(self) -> int:
        try:
            msg = await self.reader.message()
        finally:
            self.reader.close()
        if msg is None:
            code = read_exit_file(self.paths.exit_file(self.cid))
            return 255 if code is None else code
        return int(msg.get("data", 255))


async def launch_exec(*, conmon: str, runtime: str, runtime_args: list[str], cid: str, exec_id: str,
                      paths: MonitorPaths, process_json: str, terminal: bool, stdin: bool,
                      stderr_path: str, attach=None) -> ExecSession:
    """Run `<runtime> exec --process process_json cid` under conmon.

    `attach`, when given, is an async callable run once the attach socket listens and
    before the process starts (so no output is lost).
    """
    os.makedirs(paths.exit_dir, exist_ok=True)
    os.makedirs(paths.persist_dir, exist_ok=True)
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    start_r, start_w = os.pipe2(os.O_CLOEXEC)
    att_r, att_w = os.pipe2(os.O_CLOEXEC)
    args = _base_args(conmon, runtime, runtime_args, cid, exec_id, exec_id, paths, terminal, stdin, False)
    args += ["-e", "--exec-process-spec", process_json, "--exec-attach"]
    reader = att_reader = None
    try:
        # conmon blocks on the first start-pipe read before forking
        os.write(start_w, b"0")
        await _spawn(args, (sync_w, start_r, att_w),
                     {"_OCI_SYNCPIPE": sync_w, "_OCI_STARTPIPE": start_r, "_OCI_ATTACHPIPE": att_w},
                     stderr_path, paths.bundle)
        for fd in (sync_w, start_r, att_w):
            os.close(fd)
        sync_w = start_r = att_w = -1
        reader = _PipeLines(sync_r)
        att_reader = _PipeLines(att_r)
        sync_r = att_r = -1
        msg = await att_reader.message()
        if msg is None:
            raise Internal(f"exec in `{cid}`: conmon exited before the attach socket was ready")
        if attach is not None:
            await attach()
        os.write(start_w, b"0")
        msg = await reader.message()
        if msg is None:
            raise Internal(f"exec in `{cid}`: conmon exited without a word (see {stderr_path})")
        pid = int(msg.get("data", -1))
        if pid <= 0:
            raise RuntimeFailed(runtime_message(msg.get("message") or "runtime exec failed"))
        session = ExecSession(reader, paths, cid)
        session.pid = pid
        reader = None
        return session
    finally:
        for fd in (sync_r, sync_w, start_r, start_w, att_r, att_w):
            if fd >= 0:
                os.close(fd)
        if att_reader:
            att_reader.close()
        if reader:
            reader.close()


def runtime_message(text: str) -> str:
    """Keep the runtime's message readable: runc's JSON and logrus lines become their `msg`."""
    from ketch import logrus
    return "; ".join(logrus.messages(text))


def read_exit_file(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def oom_killed(paths: MonitorPaths) -> bool:
    return any(os.path.exists(os.path.join(d, "oom")) for d in (paths.persist_dir, paths.bundle))


def conmon_pid(paths: MonitorPaths, cid: str) -> int | None:
    """The pid of the live conmon watching `cid`, or None (checked against pid reuse)."""
    try:
        with open(paths.conmon_pid_file) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    if not cmd or not os.path.basename(cmd[0]).startswith(b"conmon") or cid.encode() not in cmd:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except (FileNotFoundError, IndexError):
        return None
    return pid


async def wait_pid_exit(pid: int) -> None:
    """Wait for any process (not only our children) to exit, through a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def exited() -> None:
        if not fut.done():
            fut.set_result(None)
    loop.add_reader(fd, exited)
    try:
        await fut
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _dir_path(directory: str, name: str) -> tuple[int, str]:
    """A path to directory/name short enough for sun_path, through /proc/self/fd."""
    fd = os.open(directory, os.O_PATH | os.O_CLOEXEC)
    return fd, f"/proc/self/fd/{fd}/{name}"


async def connect_attach(bundle: str) -> socket.socket:
    fd, path = _dir_path(bundle, "attach")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, path)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        sock.close()
        raise NotFound(f"attach to `{bundle}`: {(e.strerror or str(e)).lower()}") from None
    finally:
        os.close(fd)
    return sock


def control(bundle: str, message: str) -> None:
    """Write a control line to conmon's ctl fifo (resize, reopen log)."""
    try:
        fd = os.open(os.path.join(bundle, "ctl"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise Unavailable(f"monitor control `{bundle}`: {(e.strerror or str(e)).lower()}") from None
    try:
        os.write(fd, message.encode())
    finally:
        os.close(fd)


def resize(bundle: str, height: int, width: int) -> None:
    control(bundle, f"1 {height} {width}\n")


def reopen_log(bundle: str) -> None:
    control(bundle, "2 0 0\n")
