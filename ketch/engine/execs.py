"""Exec sessions: create, start under conmon (attached or detached), resize, inspect, restore.

An exec is an `Exec` record; starting one writes the OCI process (the container's own process
with the exec's changes) and has conmon run `<runtime> exec`. An attached start connects to the
session's attach socket before the process runs, so no output is lost, and hands out a
`Session`. A record is kept on disk while the exec runs, so that a restarted ketchd learns how
it ended; ended execs are forgotten after five minutes, as Docker does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

from ketch.engine import spec as spec_mod
from ketch.engine.container import Container, container_event, new_id
from ketch.engine.sessions import Session, detach_keys
from ketch.engine.state import Status
from ketch.engine.store import ContainerStore
from ketch.engine.validate import type_check
from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.monitor import conmon
from ketch.monitor.attach import AttachConnection

KEEP_ENDED = 300.0


@dataclass
class Exec:
    id: str
    container_id: str
    cmd: list[str]
    tty: bool = False
    user: str = ""
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    privileged: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    detach_keys: str = ""
    stream_stdout: bool = True     # the attached stream carries stdout unless AttachStdout is false
    stream_stderr: bool = True
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    dir: str = ""
    finished_at: float = 0.0

    def inspect(self) -> dict:
        return {"ID": self.id, "Running": self.running, "ExitCode": self.exit_code,
                "ProcessConfig": {"tty": self.tty, "entrypoint": self.cmd[0], "arguments": self.cmd[1:],
                                  "privileged": self.privileged, "user": self.user},
                "OpenStdin": self.attach_stdin, "OpenStderr": self.attach_stderr, "OpenStdout": self.attach_stdout,
                "CanRemove": False, "ContainerID": self.container_id, "DetachKeys": self.detach_keys,
                "Pid": self.pid}

    @classmethod
    def from_dict(cls, d: dict) -> Exec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Execs:
    def __init__(self, store: ContainerStore, runtime, monitor, events, tasks):
        self.store = store
        self.runtime = runtime
        self.monitor = monitor   # ketch.engine.lifecycle.MonitorConfig
        self.events = events
        self.tasks = tasks
        self._execs: dict[str, Exec] = {}

    # --- create / inspect -------------------------------------------------------------
    def create(self, ref: str, body: object) -> str:
        c = self.store.get(ref)
        if not isinstance(body, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go value of type container.ExecOptions")
        type_check(body, "Cmd", list, "ExecConfig")
        type_check(body, "Env", list, "ExecConfig")
        if c.status is Status.PAUSED:
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if c.status is not Status.RUNNING:
            raise Conflict(f"Container {c.id} is not running")
        if not body.get("Cmd"):
            raise InvalidArgument("No exec command specified")
        detach_keys(body.get("DetachKeys"))
        self._prune()
        e = Exec(id=new_id(), container_id=c.id, cmd=list(body["Cmd"]), tty=bool(body.get("Tty")),
                 user=body.get("User") or "", env=list(body.get("Env") or []), workdir=body.get("WorkingDir") or "",
                 privileged=bool(body.get("Privileged")), attach_stdin=bool(body.get("AttachStdin")),
                 attach_stdout=bool(body.get("AttachStdout")), attach_stderr=bool(body.get("AttachStderr")),
                 detach_keys=body.get("DetachKeys") or "",
                 stream_stdout=bool(body.get("AttachStdout", True)), stream_stderr=bool(body.get("AttachStderr", True)))
        self._execs[e.id] = e
        c.data["ExecIDs"] = (c.data.get("ExecIDs") or []) + [e.id]
        container_event(self.events, c, f"exec_create: {' '.join(e.cmd)}", execID=e.id)
        return e.id

    def get(self, eid: str) -> Exec:
        e = self._execs.get(eid)
        if e is None:
            raise NotFound(f"No such exec instance: {eid}")
        return e

    def inspect(self, eid: str) -> dict:
        return self.get(eid).inspect()

    def forget_container(self, c: Container) -> None:
        for eid in list(c.data.get("ExecIDs") or []):
            self._execs.pop(eid, None)

    def _prune(self) -> None:
        now = time.time()
        for eid, e in list(self._execs.items()):
            if e.finished_at and now - e.finished_at > KEEP_ENDED:
                del self._execs[eid]
                c = self.store.get(e.container_id) if e.container_id in self.store else None
                if c is not None and eid in (c.data.get("ExecIDs") or []):
                    c.data["ExecIDs"] = [x for x in c.data["ExecIDs"] if x != eid] or None

    # --- start ------------------------------------------------------------------------
    def process_for(self, c: Container, cmd: list[str], *, user: str | None = None, env: list[str] | None = None,
                    workdir: str | None = None, tty: bool = False, privileged: bool = False) -> dict:
        with open(os.path.join(c.bundle, "config.json")) as f:
            spec = json.load(f)
        return spec_mod.exec_process(spec, c.notes.rootfs or spec["root"]["path"], cmd, user=user, env=env,
                                     workdir=workdir, tty=tty, privileged=privileged)

    async def start(self, eid: str, *, detach: bool = False, tty: bool | None = None) -> Session | None:
        """Start an exec. Detached: None once it runs. Attached: a Session whose output ends with the
        process; its `finished` gives the exit code. `tty` (from the start body) frames the stream."""
        e = self.get(eid)
        c = self.store.get(e.container_id)
        if e.running or e.exit_code is not None:
            raise Conflict(f"Error: Exec command {eid} is already running" if e.running
                           else f"Error: Exec command {eid} has already run")
        if c.status is not Status.RUNNING:
            raise Conflict(f"Container {c.id} is not running")
        proc = self.process_for(c, e.cmd, user=e.user, env=e.env, workdir=e.workdir, tty=e.tty,
                                privileged=e.privileged)
        edir = os.path.join(c.dir, "exec", eid[:16])
        os.makedirs(edir, exist_ok=True)
        pj = os.path.join(edir, "process.json")
        with open(pj, "w") as f:
            json.dump(proc, f)
        paths = conmon.MonitorPaths.under(edir, edir, None)
        e.dir = edir
        loop = asyncio.get_running_loop()
        conn: asyncio.Future = loop.create_future()

        async def connect():
            if not detach:
                conn.set_result(await AttachConnection.open(edir))
        e.running = True
        try:
            m = self.monitor
            session = await conmon.launch_exec(
                conmon=m.conmon, runtime=m.runtime_binary, runtime_args=self.runtime.global_args,
                cid=c.id, exec_id=eid, paths=paths, process_json=pj, terminal=e.tty,
                stdin=e.attach_stdin and not detach, stderr_path=os.path.join(edir, "conmon.err"), attach=connect)
        except conmon.RuntimeFailed as err:
            msg = str(err)
            low = msg.lower()
            e.running = False
            e.exit_code = 127 if ("not found" in low or "no such file" in low) else 126
            self._close(conn)
            raise InvalidArgument(f"OCI runtime exec failed: {msg}: unknown") from None
        except BaseException:
            e.running = False
            e.exit_code = 126
            self._close(conn)
            raise
        e.pid = session.pid
        with open(os.path.join(edir, "exec.json"), "w") as f:
            json.dump(asdict(e), f)
        container_event(self.events, c, f"exec_start: {' '.join(e.cmd)}", execID=eid)
        done: asyncio.Future = loop.create_future()

        async def finish():
            try:
                code = await session.exit_code()
            except Exception:
                code = 255
            self._finished(c, e, code)
            done.set_result(code)
        self.tasks.spawn(finish())
        if detach:
            return None
        return Session(tty=e.tty if tty is None else tty, stdin=e.attach_stdin, stdout=e.stream_stdout,
                       stderr=e.stream_stderr, keys=detach_keys(e.detach_keys), connection=conn,
                       finished=done)

    @staticmethod
    def _close(conn: asyncio.Future) -> None:
        if conn.done() and not conn.cancelled() and conn.exception() is None:
            conn.result().close()

    def _finished(self, c: Container, e: Exec, code: int) -> None:
        e.running = False
        e.exit_code = code
        e.pid = 0
        e.finished_at = time.time()
        container_event(self.events, c, "exec_die", execID=e.id, exitCode=code)
        if e.dir:
            shutil.rmtree(e.dir, ignore_errors=True)

    def resize(self, eid: str, h: int, w: int) -> None:
        e = self.get(eid)
        if not e.running or not e.dir:
            raise Conflict(f"Exec {eid} is not running")
        if e.tty:
            conmon.resize(e.dir, h, w)

    # --- restore ----------------------------------------------------------------------
    def restore(self, c: Container) -> None:
        """Exec sessions that ran when ketchd stopped: watch the live ones, settle the others."""
        root = os.path.join(c.dir, "exec")
        if not os.path.isdir(root):
            return
        for name in os.listdir(root):
            edir = os.path.join(root, name)
            try:
                with open(os.path.join(edir, "exec.json")) as f:
                    e = Exec.from_dict(json.load(f))
            except (OSError, ValueError, TypeError):
                shutil.rmtree(edir, ignore_errors=True)
                continue
            e.dir = edir
            self._execs[e.id] = e
            paths = conmon.MonitorPaths.under(edir, edir, None)
            cpid = conmon.conmon_pid(paths, c.id)

            async def settle(e=e, paths=paths, cpid=cpid):
                if cpid:
                    await conmon.wait_pid_exit(cpid)
                code = conmon.read_exit_file(paths.exit_file(c.id))
                self._finished(c, e, 255 if code is None else code)
            self.tasks.spawn(settle())
