"""Lifecycle: start, stop, kill, pause, unpause, restart, remove, wait, update, rename, attach,
and what happens when a container's process ends (exit handling, restart policy, auto-remove).

How a start runs (see ketch.monitor): mount the root filesystem through the ImageService, ask
the NetworkService for the container's network (it writes /etc/hosts and friends), write the
bundle's config.json (ketch.engine.spec), have conmon run `<runtime> create`, connect the
attach clients that were waiting, then `<runtime> start`. ketchd watches conmon through a
pidfd; when conmon exits, its exit file says how the container ended. After a daemon restart,
`restore` re-attaches to the conmons still alive and settles those that ended meanwhile.

Every operation that changes a container holds that container's lock; waiting for a process to
end happens outside it (the exit handler takes the lock to record the end).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import signal as signal_mod
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ketch import space
from ketch.engine import hostconfig
from ketch.engine import logs as logs_mod
from ketch.engine import restart as restart_mod
from ketch.engine import spec as spec_mod
from ketch.engine.container import ZERO_TIME, AttachWaiter, Container, container_event, now_rfc3339
from ketch.engine.execs import Execs
from ketch.engine.health import Health
from ketch.engine.ports import ImageService, NetworkService
from ketch.engine.restart import RestartPolicy
from ketch.engine.sessions import Session, detach_keys
from ketch.engine.state import Status
from ketch.engine.store import ContainerStore
from ketch.engine.validate import parse_signal, validate_update
from ketch.errors import Conflict, Internal, InvalidArgument, KetchError, NotFound
from ketch.monitor import conmon
from ketch.monitor.attach import AttachConnection

log = logging.getLogger("ketch.engine")

ATTACH_CONNECT_WAIT = 0.5   # how long a start waits for the attach clients it woke to connect
KILL_WAIT = 10.0            # how long a SIGKILL waits for the exit before it answers anyway
BUSY_RETRIES = 20           # an unmount or removal that finds the root busy is tried again, 50 ms apart


@dataclass
class MonitorConfig:
    conmon: str
    runtime_binary: str
    cgroup_parent: str
    init_binary: str | None


class Lifecycle:
    def __init__(self, store: ContainerStore, runtime, images: ImageService, networks: NetworkService,
                 monitor: MonitorConfig, execs: Execs, health: Health, events, tasks, volumes=None):
        self.store = store
        self.volumes = volumes    # VolumeOps: mounted at start, unmounted at exit, released at remove
        self.runtime = runtime
        self.images = images
        self.networks = networks
        self.monitor = monitor
        self.execs = execs
        self.health = health
        self.events = events
        self.tasks = tasks
        self._rotate_task: asyncio.Task | None = None

    def _monitor_paths(self, c: Container) -> conmon.MonitorPaths:
        lc = c.host_config.get("LogConfig") or {}
        no_log = lc.get("Type") == "none"
        return conmon.MonitorPaths.under(os.path.join(c.dir, "monitor"), c.bundle, None if no_log else c.log_path,
                                         logs_mod.monitor_bound(lc.get("Config") or {}))

    # --- start -----------------------------------------------------------------------
    async def start(self, ref: str) -> bool:
        """Start; False if it was already running (304)."""
        c = self.store.get(ref)
        async with c.lock:
            if c.status is Status.PAUSED:
                raise Conflict("cannot start a paused container, try unpause instead")
            if c.status.alive:
                return False
            if c.status is Status.REMOVING:
                raise Conflict("container is marked for removal and cannot be started")
            if c.restart_task and not c.restart_task.done():
                c.restart_task.cancel()
            c.notes.stopped_by_user = False
            c.save()
            try:
                await self._start(c)
                return True
            except KetchError as e:
                if not c.host_config.get("AutoRemove"):
                    raise
                failed = e
        # as dockerd: a failed start of --rm removes it (and its anonymous volumes) before answering,
        # so the client never sees it left over; outside the lock, which the removal takes
        try:
            await self.remove(c.id, force=True, volumes=True)
        except KetchError as e:
            log.warning("auto-remove after a failed start", extra={"container": c.id, "error": str(e)})
        raise failed

    def _joined_namespaces(self, c: Container) -> dict[str, str]:
        """Namespaces to join for --network/--pid/--ipc container:<name>: their /proc paths."""
        out = {}
        hc = c.host_config
        for key, ns, proc_name in (("NetworkMode", "network", "net"), ("PidMode", "pid", "pid"),
                                   ("IpcMode", "ipc", "ipc")):
            mode = hc.get(key) or ""
            if not mode.startswith("container:"):
                continue
            other = self.store.get(mode.split(":", 1)[1])
            if other.id == c.id:
                raise InvalidArgument(f"cannot join own {ns} namespace")
            if other.status is not Status.RUNNING or not other.state["Pid"]:
                raise Conflict(f"cannot join {ns} namespace of a non running container: container "
                               f"{other.id} is {other.status}")
            out[ns] = f"/proc/{other.state['Pid']}/ns/{proc_name}"
        return out

    async def _start(self, c: Container) -> None:
        hc, cfg, m = c.host_config, c.config, self.monitor
        rootfs = await self.images.mount_rootfs(c.id)
        try:
            if self.volumes is not None:
                await self.volumes.mount(c, rootfs)
            joins = self._joined_namespaces(c)
            request = c.network
            request.name = c.name
            for target, alias, _ in request.links:
                other = self.store.get(target) if target in self.store else None
                if other is None or other.status is not Status.RUNNING:
                    raise Conflict(f"Cannot link to a non running container: "
                                   f"{other.data['Name'] if other else target} AS /{c.name}/{alias}")
            attachment = await self.networks.attach(c.id, request, c.dir, joins.pop("network", None))
            if attachment.netns_path:
                joins["network"] = attachment.netns_path
            c.data["NetworkSettings"] = attachment.settings
            if attachment.env:
                cfg = dict(cfg, Env=spec_mod.merge_env(attachment.env, cfg.get("Env") or []))
            spec = spec_mod.build_spec(cid=c.id, config=cfg, host_config=hc, rootfs=rootfs, etc_dir=c.dir,
                                       cgroup_parent=hc.get("CgroupParent") or m.cgroup_parent,
                                       init_binary=m.init_binary, mounts=c.mounts, ns_paths=joins,
                                       host_network=attachment.host)
            with open(os.path.join(c.bundle, "config.json"), "w") as f:
                json.dump(spec, f)
            paths = self._monitor_paths(c)
            if os.path.exists(os.path.join(self.runtime.root, c.id)):
                await self.runtime.delete(c.id, force=True)  # a leftover from a crash would block create
            pid = await conmon.launch_container(
                conmon=m.conmon, runtime=m.runtime_binary, runtime_args=self.runtime.global_args,
                cid=c.id, name=c.name, paths=paths, terminal=c.tty, stdin=bool(cfg.get("OpenStdin")),
                # with a tty a client detaching (ctrl-p ctrl-q) must not end the session's stdin
                leave_stdin_open=bool(cfg.get("OpenStdin")) and (not cfg.get("StdinOnce") or c.tty),
                stderr_path=os.path.join(c.dir, "monitor", "conmon.err"))
        except conmon.RuntimeFailed as e:
            await self._start_failed(c, str(e))
        except KetchError as e:
            await self._start_failed(c, str(e), wrap=False, exc=e)
        await self._connect_waiting_attach(c)
        try:
            await self.runtime.start(c.id)
        except KetchError as e:
            # the process could not be exec'd (start reports the init's own words): as a create
            # failure, so 126/127 reach the client as Docker's
            await self.runtime.delete(c.id, force=True)
            await self._start_failed(c, str(e))
        cpid = conmon.conmon_pid(paths, c.id)
        c.set_status(Status.RUNNING)
        c.state.update({"Pid": pid, "ExitCode": 0, "Error": "", "OOMKilled": False, "StartedAt": now_rfc3339(),
                        "FinishedAt": ZERO_TIME})
        c.notes.monitor_pid = cpid
        c.notes.rootfs = rootfs
        c.notes.started_at = time.time()
        self.health.reset(c)
        c.save()
        container_event(self.events, c, "start")
        self._watch(c, cpid)

    async def _connect_waiting_attach(self, c: Container) -> None:
        """Attach clients that waited for this start connect before the process runs."""
        waiting, c.attach_waiters = c.attach_waiters, []
        for w in waiting:
            if not w.ready.done():
                w.ready.set_result(None)
        pending = [w.connected for w in waiting if not w.connected.done()]
        if pending:
            await asyncio.wait(pending, timeout=ATTACH_CONNECT_WAIT)

    async def _start_failed(self, c: Container, message: str, wrap: bool = True, exc: KetchError | None = None):
        low = message.lower()
        code = 128
        if "executable file not found" in low or "no such file or directory" in low:
            code = 127
        elif "permission denied" in low:
            code = 126
        # Docker leaves a never-started container "created", with the exit code and error
        c.set_status(Status.CREATED if c.state["StartedAt"] == ZERO_TIME else Status.EXITED)
        c.state.update({"ExitCode": code, "Error": message, "Pid": 0})
        c.save()
        for undo in (lambda: self.networks.detach(c.id, c.network), lambda: self.images.unmount_rootfs(c.id)):
            try:
                await undo()
            except KetchError:
                pass
        if self.volumes is not None:
            self.volumes.unmount(c)
        if exc is not None and not wrap:
            raise exc
        text = f"failed to create task for container: OCI runtime create failed: {message}: unknown"
        if code in (126, 127) or "not a directory" in low:
            raise InvalidArgument(text)
        raise Internal(text)

    # --- exit handling ---------------------------------------------------------------
    def _watch(self, c: Container, conmon_pid: int | None) -> None:
        async def watch():
            if conmon_pid:
                await conmon.wait_pid_exit(conmon_pid)
            await self.on_exit(c)
        c.watch_task = self.tasks.spawn(watch())
        self.health.watch(c)
        lc = c.host_config.get("LogConfig") or {}
        if lc.get("Config", {}).get("max-size"):
            try:  # hold the live file from the start: conmon may cut it before the next round
                self._rotate(c)
            except (OSError, KetchError) as e:
                log.warning("rotate log", extra={"container": c.id, "error": str(e)})
            self._ensure_rotator()

    def _exit_code(self, c: Container) -> tuple[int | None, bool, str]:
        paths = self._monitor_paths(c)
        code = conmon.read_exit_file(paths.exit_file(c.id))
        if code is None:
            code = conmon.read_exit_file(os.path.join(paths.persist_dir, "exit"))
        finished = now_rfc3339()
        try:  # the exit file was written when the container ended, maybe while ketchd was away
            mt = os.stat(paths.exit_file(c.id)).st_mtime_ns
            finished = datetime.fromtimestamp(mt // 10**9, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S") + f".{mt % 10**9:09d}Z"
        except FileNotFoundError:
            pass
        return code, conmon.oom_killed(paths), finished

    async def on_exit(self, c: Container) -> None:
        async with c.lock:
            restart = await self._record_exit(c)
        if restart is None and c.host_config.get("AutoRemove") and not c.restart_requested:
            try:
                await self.remove(c.id, force=True, volumes=True)
            except (NotFound, Conflict):
                pass

    async def _record_exit(self, c: Container) -> float | None:
        """Settle an ended container; return the restart delay, or None when it stays down."""
        code, oom, finished = self._exit_code(c)
        if code is None:
            # conmon itself died (killed): the container may still be there; make sure it is not
            try:
                await self.runtime.kill(c.id, "KILL", all_=True)
            except KetchError:
                pass
            code = 137
        self.health.stop(c)
        try:
            await self.runtime.delete(c.id, force=True)
        except KetchError as e:
            log.warning("delete runtime state", extra={"container": c.id, "error": str(e)})
        try:
            c.data["NetworkSettings"] = await self.networks.detach(c.id, c.network)
        except KetchError as e:
            log.warning("detach network", extra={"container": c.id, "error": str(e)})
        try:
            await self.images.unmount_rootfs(c.id)
        except KetchError as e:
            log.warning("unmount rootfs", extra={"container": c.id, "error": str(e)})
        if self.volumes is not None:
            self.volumes.unmount(c)
        if oom and code in (137, 255, -1):
            code = 137
        c.state.update({"ExitCode": code, "OOMKilled": oom, "Pid": 0, "FinishedAt": finished})
        self.execs.forget_container(c)   # as dockerd: the exec sessions end with the container
        c.data["ExecIDs"] = None
        ran_for = time.time() - float(c.notes.started_at or time.time())
        policy = RestartPolicy.parse(c.host_config.get("RestartPolicy"))
        restart = restart_mod.should_restart(policy, code, c.data["RestartCount"],
                                             c.notes.stopped_by_user or c.status is Status.REMOVING)
        if c.status is not Status.REMOVING:
            c.set_status(Status.RESTARTING if restart else Status.EXITED)
        c.notes.monitor_pid = None
        delay = None
        if restart:
            delay = restart_mod.next_backoff(c.notes.backoff, ran_for)
            c.notes.backoff = delay
        c.save()
        if oom:
            container_event(self.events, c, "oom")
        container_event(self.events, c, "die", exitCode=code)
        # as dockerd: every waiter answers at this exit, also when the restart policy starts it again
        self._notify(c, "not-running", code)
        if delay is not None:
            c.restart_task = self.tasks.spawn(self._restart_later(c, delay))
            return delay
        return None

    async def _restart_later(self, c: Container, delay: float) -> None:
        await asyncio.sleep(delay)
        async with c.lock:
            if c.status is not Status.RESTARTING:
                return
            c.data["RestartCount"] += 1
            try:
                await self._start(c)
                container_event(self.events, c, "restart")
            except KetchError as e:
                log.warning("restart failed", extra={"container": c.id, "error": str(e)})
                if c.status is Status.RESTARTING:
                    c.set_status(Status.EXITED)
                c.save()
                self._notify(c, "not-running", c.state["ExitCode"])

    @staticmethod
    def _notify(c: Container, condition: str, code: int) -> None:
        keep = []
        for cond, fut in c.waiters:
            if fut.done():
                continue
            if cond == condition or (condition == "not-running" and cond == "next-exit"):
                fut.set_result(code)
            else:
                keep.append((cond, fut))
        c.waiters = keep

    def _exit_future(self, c: Container) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        c.waiters.append(("not-running", fut))
        return fut

    # --- stop / kill / restart -------------------------------------------------------
    async def kill(self, ref: str, signal=None) -> None:
        c = self.store.get(ref)
        sig = parse_signal(signal, signal_mod.SIGKILL)
        async with c.lock:
            if c.status is Status.RESTARTING and sig in (signal_mod.SIGKILL, signal_mod.SIGTERM):
                c.notes.stopped_by_user = True
                if c.restart_task:
                    c.restart_task.cancel()
                c.set_status(Status.EXITED)
                c.save()
                self._notify(c, "not-running", c.state["ExitCode"])
                return
            if not c.status.alive:
                raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
            c.notes.stopped_by_user = True  # as moby's killWithSignal: a killed container is not restarted
            c.save()
            dead = self._exit_future(c) if sig == signal_mod.SIGKILL else None
            await self.runtime.kill(c.id, sig, all_=False)
            if c.status is Status.PAUSED and sig == signal_mod.SIGKILL:
                await self.runtime.resume(c.id)  # a frozen task cannot die until thawed
        container_event(self.events, c, "kill", signal=sig)
        if dead is not None:  # as dockerd: a SIGKILL answers once the container is dead
            try:
                await asyncio.wait_for(asyncio.shield(dead), KILL_WAIT)
            except asyncio.TimeoutError:
                log.warning("container not dead after SIGKILL", extra={"container": c.id})

    async def stop(self, ref: str, timeout: int | None = None, signal=None) -> bool:
        c = self.store.get(ref)
        if c.status is Status.RESTARTING:
            await self.kill(ref)
            return True
        sig = parse_signal(signal or c.config.get("StopSignal") or "TERM", signal_mod.SIGTERM)
        async with c.lock:
            if not c.status.alive:
                return False
            c.notes.stopped_by_user = True
            c.save()
            if timeout is None:
                timeout = c.config.get("StopTimeout")
                timeout = 10 if timeout is None else int(timeout)
            fut = self._exit_future(c)
            try:
                await self.runtime.kill(c.id, sig)
            except KetchError:
                pass
            if c.status is Status.PAUSED:
                await self.runtime.resume(c.id)
        container_event(self.events, c, "kill", signal=sig)
        try:
            if timeout < 0:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            try:
                await self.runtime.kill(c.id, signal_mod.SIGKILL, all_=True)
            except KetchError:
                pass
            container_event(self.events, c, "kill", signal=int(signal_mod.SIGKILL))
            await fut
        container_event(self.events, c, "stop")
        return True

    async def restart(self, ref: str, timeout: int | None = None, signal=None) -> None:
        c = self.store.get(ref)
        c.restart_requested = True   # the stop below must not auto-remove an --rm container
        try:
            await self.stop(ref, timeout, signal)
            async with c.lock:
                if c.id not in self.store:
                    raise NotFound(f"No such container: {ref}")
                if not c.status.alive:
                    c.notes.stopped_by_user = False
                    await self._start(c)
        finally:
            c.restart_requested = False
        container_event(self.events, c, "restart")

    # --- wait ------------------------------------------------------------------------
    def wait_future(self, ref: str, condition: str = "not-running") -> asyncio.Future:
        """Register a waiter now (so a start that follows is seen); the future gives the exit code."""
        c = self.store.get(ref)
        condition = condition or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: \"{condition}\"")
        fut = asyncio.get_running_loop().create_future()
        if condition == "not-running" and not c.running:
            fut.set_result(c.state["ExitCode"])
        else:
            c.waiters.append((condition, fut))
        return fut

    # --- remove ----------------------------------------------------------------------
    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """Remove a container; on a full disk its writes (the record, the snapshot metadata) may
        spend the data root's reserve (ketch.space), so rm works when nothing else can."""
        with space.freeing(os.path.dirname(self.store.directory)):
            await self._remove(ref, force=force, volumes=volumes)

    async def _remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        c = self.store.get(ref)
        if c.status.active:
            if not force:
                raise Conflict(f"You cannot remove a running container {c.id}. Stop the container "
                               "before attempting removal or force remove")
            async with c.lock:
                c.notes.stopped_by_user = True
                if c.restart_task:
                    c.restart_task.cancel()
                fut = None
                if c.status.alive:
                    fut = self._exit_future(c)
                    try:
                        await self.runtime.kill(c.id, signal_mod.SIGKILL, all_=True)
                        container_event(self.events, c, "kill", signal=int(signal_mod.SIGKILL))
                        if c.status is Status.PAUSED:
                            await self.runtime.resume(c.id)
                    except KetchError:
                        pass
            if fut is not None:
                try:
                    await asyncio.wait_for(fut, 15)
                except asyncio.TimeoutError:
                    pass
        async with c.lock:
            # a removal holds the lock from REMOVING until the record is gone (or dead)
            if c.id not in self.store:
                return  # removed meanwhile (--rm, or a concurrent rm)
            if c.status is Status.RESTARTING:
                c.set_status(Status.EXITED)
            c.set_status(Status.REMOVING)
            for task in (c.watch_task, c.health_task, c.restart_task):
                if task and not task.done() and task is not asyncio.current_task():
                    task.cancel()
            try:
                if os.path.exists(os.path.join(self.runtime.root, c.id)):
                    await self.runtime.delete(c.id, force=True)
                await self.networks.remove(c.id, c.network)
                await self._retry_busy(self.images.unmount_rootfs, c.id)
                await self._retry_busy(self.images.remove_rootfs, c.id)
                if self.volumes is not None:
                    self.volumes.release(c.id, c.mounts, remove_anonymous=volumes)
            except Conflict:
                c.set_status(Status.DEAD)
                c.save()
                raise
            except KetchError as e:
                c.set_status(Status.DEAD)
                c.save()
                raise Internal(f"remove container {c.id}: {e}") from None
            self.store.discard(c)
            self.execs.forget_container(c)
            shutil.rmtree(c.dir, ignore_errors=True)
            for w in c.attach_waiters:
                if not w.ready.done():
                    w.ready.set_exception(NotFound(f"No such container: {c.id}"))
            c.attach_waiters = []
        container_event(self.events, c, "destroy")
        code = c.state["ExitCode"]
        for _cond, fut in c.waiters:
            if not fut.done():
                fut.set_result(code)
        c.waiters = []

    @staticmethod
    async def _retry_busy(fn, cid: str) -> None:
        """A root still being unmounted (a process of the container not yet reaped, a copy in
        progress) answers EBUSY or ENOTEMPTY for a moment: try again before giving up."""
        for attempt in range(BUSY_RETRIES):
            try:
                return await fn(cid)
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise Internal(f"remove container {cid}: {e}") from None
                if attempt == BUSY_RETRIES - 1:
                    raise Conflict(f"remove container {cid}: {(e.strerror or str(e)).lower()}: the container is "
                                   "marked dead, try again") from None
            except KetchError as e:
                low = str(e).lower()
                if not ("busy" in low or "not empty" in low):
                    raise
                if attempt == BUSY_RETRIES - 1:
                    raise Conflict(f"remove container {cid}: {e}: the container is marked dead, "
                                   "try again") from None
            await asyncio.sleep(0.05)

    # --- pause / rename / update -----------------------------------------------------
    async def pause(self, ref: str) -> None:
        c = self.store.get(ref)
        async with c.lock:
            if c.status is Status.PAUSED:
                raise Conflict(f"Container {c.id} is already paused")
            if c.status is not Status.RUNNING:
                raise Conflict(f"Container {c.id} is not running")
            await self.runtime.pause(c.id)
            c.set_status(Status.PAUSED)
            c.save()
        container_event(self.events, c, "pause")

    async def unpause(self, ref: str) -> None:
        c = self.store.get(ref)
        async with c.lock:
            if c.status is not Status.PAUSED:
                raise Conflict(f"Container {c.id} is not paused")
            await self.runtime.resume(c.id)
            c.set_status(Status.RUNNING)
            c.save()
        container_event(self.events, c, "unpause")

    async def rename(self, ref: str, new: str) -> None:
        c = self.store.get(ref)
        async with c.lock:
            old = c.name
            self.store.rename(c, new)
        container_event(self.events, c, "rename", oldName="/" + old)

    async def update(self, ref: str, body: object) -> list[str]:
        c = self.store.get(ref)
        async with c.lock:
            hc = validate_update(body, c.host_config)
            resources = hostconfig.resources(hc)
            resources.pop("devices", None)
            if c.status.alive and resources:
                await self.runtime.update(c.id, resources)
            c.data["HostConfig"] = hc
            c.save()
        container_event(self.events, c, "update")
        return []

    # --- attach ----------------------------------------------------------------------
    async def attach(self, ref: str, *, stdin: bool, stdout: bool, stderr: bool, stream: bool = True,
                     logs=None, keys: str | None = None) -> Session:
        """An attach session; when the container is not running it waits for the next start.
        `logs` is an async iterator of earlier output (attach's logs=1) sent first."""
        c = self.store.get(ref)
        dkeys = detach_keys(keys)
        if c.status is Status.PAUSED:
            raise Conflict("You cannot attach to a paused container, unpause it first")
        loop = asyncio.get_running_loop()
        conn: asyncio.Future | None = None
        waiter = None
        if stream:
            if c.status is Status.RUNNING:
                conn = loop.create_future()
                conn.set_result(await AttachConnection.open(c.bundle))
            else:
                waiter = AttachWaiter(loop.create_future(), loop.create_future())
                c.attach_waiters.append(waiter)

                async def connect_after_start(w=waiter):
                    try:
                        await w.ready
                        return await AttachConnection.open(c.bundle)
                    finally:
                        if not w.connected.done():
                            w.connected.set_result(None)
                conn = asyncio.ensure_future(connect_after_start())

        def forget():
            if waiter is not None and waiter in c.attach_waiters:
                c.attach_waiters.remove(waiter)
        container_event(self.events, c, "attach")
        return Session(tty=c.tty, stdin=stdin, stdout=stdout, stderr=stderr, keys=dkeys, connection=conn,
                       prelude=logs, on_close=forget)

    def resize(self, ref: str, h: int, w: int) -> None:
        c = self.store.get(ref)
        if not c.status.alive:
            raise Conflict(f"Container {c.id} is not running")
        if c.tty:
            conmon.resize(c.bundle, h, w)
        container_event(self.events, c, "resize", height=h, width=w)

    # --- log rotation ----------------------------------------------------------------
    def _ensure_rotator(self) -> None:
        if self._rotate_task is None or self._rotate_task.done():
            self._rotate_task = self.tasks.spawn(self._rotate_loop())

    async def _rotate_loop(self) -> None:
        """conmon cuts the logs at max-size; this keeps each cut file as ``.1`` (logs.rotate_if_needed)
        before the next cut: every half second, and every 50 ms for 10 s after a log was rotated
        or passed half its max-size (a busy writer)."""
        hot_until = 0.0
        while True:
            await asyncio.sleep(0.05 if time.monotonic() < hot_until else 0.5)
            busy = False
            for c in self.store:
                if not c.status.alive:
                    continue
                try:
                    capped, hot = self._rotate(c)
                except (OSError, KetchError) as e:
                    log.warning("rotate log", extra={"container": c.id, "error": str(e)})
                    continue
                busy = busy or capped
                if hot:
                    hot_until = time.monotonic() + 10
            if not busy:
                return

    def _rotate(self, c: Container) -> tuple[bool, bool]:
        """One rotation round for c's log: (it has a max-size, it is busy: rotated or past half of it)."""
        cfg = (c.host_config.get("LogConfig") or {}).get("Config") or {}
        if not cfg.get("max-size"):
            return False, False
        max_size = logs_mod.parse_size(cfg["max-size"])
        reopen, rotated = logs_mod.rotate_if_needed(c.log_path, max_size, int(cfg.get("max-file") or 1))
        if reopen:
            conmon.reopen_log(c.bundle)
        try:
            return True, rotated or os.path.getsize(c.log_path) >= max_size // 2
        except FileNotFoundError:
            return True, rotated

    # --- restore ---------------------------------------------------------------------
    async def _reconcile(self, c: Container) -> None:
        """A container that is not running leaves nothing running or mounted: after a kill -9 of
        ketchd in the middle of a start, an init may wait on its fifo under a live conmon, with the
        root mounted and the runtime's state written. Undo all of it; the container stays as its
        record says (created, or exited)."""
        cpid = conmon.conmon_pid(self._monitor_paths(c), c.id)
        state_dir = os.path.join(self.runtime.root, c.id)
        if cpid or os.path.exists(state_dir):
            log.info("cleaning a start that ketchd did not finish", extra={"container": c.id})
            try:
                await self.runtime.delete(c.id, force=True)
            except KetchError as e:
                log.warning("delete runtime state", extra={"container": c.id, "error": str(e)})
            if cpid:
                try:
                    await asyncio.wait_for(conmon.wait_pid_exit(cpid), 5)
                except asyncio.TimeoutError:
                    try:
                        os.kill(cpid, signal_mod.SIGKILL)
                    except ProcessLookupError:
                        pass
            shutil.rmtree(state_dir, ignore_errors=True)
        try:
            await self.images.unmount_rootfs(c.id)
        except (KetchError, OSError) as e:
            log.warning("unmount rootfs", extra={"container": c.id, "error": str(e)})

    async def _clean_orphans(self) -> None:
        """Runtime state of containers ketchd has no record of, and records a create never
        finished (a directory without container.json), go."""
        for cid in self.store.unfinished():
            log.info("removing a create that ketchd did not finish", extra={"container": cid})
            for undo in (self.images.unmount_rootfs, self.images.remove_rootfs):
                try:
                    await undo(cid)
                except (KetchError, OSError) as e:
                    log.warning("remove unfinished root", extra={"container": cid, "error": str(e)})
            shutil.rmtree(self.store.path_for(cid), ignore_errors=True)
        try:
            names = os.listdir(self.runtime.root)
        except FileNotFoundError:
            return
        for cid in names:
            if cid in self.store:
                continue
            log.info("removing runtime state without a container", extra={"container": cid})
            try:
                await self.runtime.delete(cid, force=True)
            except KetchError:
                pass
            shutil.rmtree(os.path.join(self.runtime.root, cid), ignore_errors=True)

    async def restore(self) -> None:
        """Load every container; re-attach to live ones; settle the ones that ended meanwhile;
        clean what a kill of ketchd left half-made."""
        loaded = self.store.load()
        if self.volumes is not None:   # users from the records; those still running keep theirs mounted
            self.volumes.restore(loaded, {c.id for c in loaded if c.status.alive})
        await self._clean_orphans()
        ended = []
        for c in loaded:
            self.execs.restore(c)
            if not c.status.active and c.status is not Status.REMOVING:
                await self._reconcile(c)
            if c.status.alive:
                cpid = conmon.conmon_pid(self._monitor_paths(c), c.id)
                if cpid:
                    log.info("re-attached to live container", extra={"container": c.id, "conmon": cpid})
                    self._watch(c, cpid)
                else:
                    log.info("container ended while ketchd was away", extra={"container": c.id})
                    ended.append(c)
            elif c.status is Status.RESTARTING:
                c.restart_task = self.tasks.spawn(self._restart_later(c, restart_mod.BACKOFF_START))
            elif c.status is Status.REMOVING:
                c.set_status(Status.DEAD)
                c.save()
        await self.networks.restore({c.id: c.network for c in loaded if c.status.alive and c not in ended})
        # settled before the API serves, so that the first `ps` already tells the truth
        for c in ended:
            try:
                await self.on_exit(c)
            except KetchError as e:
                log.warning("settle ended container", extra={"error": str(e)})
