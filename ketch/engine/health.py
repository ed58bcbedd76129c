"""Health checks: run the container's probe every interval and keep Docker's State.Health.

Status starting -> healthy on a passing probe; failures during the start period do not count;
`Retries` failures in a row make it unhealthy. Every change of status is an event
(`health_status: healthy`). The probe is an exec (ketch.engine.execs' process) run through the
runtime's in-process exec capture, with the probe's timeout.
"""

from __future__ import annotations

import asyncio
import time

from ketch.engine.container import Container, container_event, now_rfc3339
from ketch.engine.state import Status
from ketch.errors import KetchError

NS = 10**9


def probe_command(test: list[str]) -> list[str] | None:
    if not test or test[0] in ("NONE", ""):
        return None
    if test[0] == "CMD":
        return test[1:]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return test


def has_check(c: Container) -> bool:
    return probe_command((c.config.get("Healthcheck") or {}).get("Test") or []) is not None


class Health:
    def __init__(self, runtime, execs, events, tasks):
        self.runtime = runtime
        self.execs = execs
        self.events = events
        self.tasks = tasks

    def reset(self, c: Container) -> None:
        """At start: a container with a check starts `starting`."""
        if has_check(c):
            c.state["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
        else:
            c.state.pop("Health", None)

    def watch(self, c: Container) -> None:
        if c.state.get("Health"):
            c.health_task = self.tasks.spawn(self._loop(c))

    @staticmethod
    def stop(c: Container) -> None:
        if c.health_task and c.health_task is not asyncio.current_task():
            c.health_task.cancel()
        c.health_task = None

    async def _loop(self, c: Container) -> None:
        hc = c.config.get("Healthcheck") or {}
        cmd = probe_command(hc.get("Test") or [])
        if cmd is None:
            return
        interval = (hc.get("Interval") or 30 * NS) / NS
        timeout = (hc.get("Timeout") or 30 * NS) / NS
        start_period = (hc.get("StartPeriod") or 0) / NS
        retries = hc.get("Retries") or 3
        started = time.time()
        try:
            while c.status.alive:
                await asyncio.sleep(interval)
                if c.status is not Status.RUNNING:
                    continue
                proc = self.execs.process_for(c, cmd)
                t0 = now_rfc3339()
                try:
                    code, out = await self.runtime.exec_capture(c.id, proc, timeout)
                except asyncio.TimeoutError:
                    code, out = -1, f"Health check exceeded timeout ({timeout:g}s)".encode()
                except KetchError as e:
                    code, out = -1, str(e).encode()
                h = c.state.get("Health")
                if h is None or c.status is not Status.RUNNING:
                    return
                h["Log"] = (h["Log"] + [{"Start": t0, "End": now_rfc3339(), "ExitCode": code,
                                         "Output": out.decode(errors="replace")[:4096]}])[-5:]
                old = h["Status"]
                if code == 0:
                    h["Status"] = "healthy"
                    h["FailingStreak"] = 0
                elif not (time.time() - started < start_period and old == "starting"):
                    h["FailingStreak"] += 1
                    if h["FailingStreak"] >= retries:
                        h["Status"] = "unhealthy"
                c.save(sync=h["Status"] != old)
                if h["Status"] != old:
                    container_event(self.events, c, f"health_status: {h['Status']}")
        except asyncio.CancelledError:
            pass
