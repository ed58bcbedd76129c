"""The runc command line, as ketchd drives it (runc, crun or ketch-runtime)."""

import asyncio
import json
import os
import subprocess

from ketch.errors import Conflict, Internal, NotFound
from ketch.monitor import conmon


class OciRuntime:
    def __init__(self, binary: str, root: str):
        self.binary = binary
        self.root = root

    @property
    def global_args(self) -> list[str]:
        return ["--root", self.root]

    async def _run(self, *args: str, stdin: bytes | None = None, timeout: float | None = None
                   ) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            self.binary, *self.global_args, *args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        # communicate() has waited for the process, so returncode is set
        return proc.returncode, out, err  # type: ignore[return-value]

    async def _check(self, what: str, cid: str, *args: str) -> bytes:
        rc, out, err = await self._run(*args)
        if rc != 0:
            msg = _message(err) or f"exit status {rc}"
            low = msg.lower()
            if "does not exist" in low or "not found" in low and "container" in low:
                raise NotFound(f"{what} `{cid}`: {msg}")
            if "not running" in low or "not paused" in low or "cannot" in low:
                raise Conflict(f"{what} `{cid}`: {msg}")
            raise Internal(f"{what} `{cid}`: {msg}")
        return out

    async def start(self, cid: str) -> None:
        await self._check("start container", cid, "start", cid)

    async def kill(self, cid: str, signal: str | int, all_: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_ else []) + [cid, str(signal)]
        await self._check("kill container", cid, *args)

    async def delete(self, cid: str, force: bool = True) -> None:
        rc, _, err = await self._run("delete", *(["--force"] if force else []), cid)
        if rc != 0 and b"does not exist" not in err and b"not exist" not in err:
            raise Internal(f"delete container `{cid}`: {_message(err)}")

    async def state(self, cid: str) -> dict | None:
        rc, out, err = await self._run("state", cid)
        if rc != 0:
            return None
        return json.loads(out)

    async def pause(self, cid: str) -> None:
        await self._check("pause container", cid, "pause", cid)

    async def resume(self, cid: str) -> None:
        await self._check("unpause container", cid, "resume", cid)

    async def ps(self, cid: str) -> list[int]:
        out = await self._check("list processes of", cid, "ps", "--format", "json", cid)
        return [int(p) for p in json.loads(out or b"[]") or []]

    async def update(self, cid: str, resources: dict) -> None:
        rc, _, err = await self._run("update", "--resources", "-", cid, stdin=json.dumps(resources).encode())
        if rc != 0:
            raise Internal(f"update container `{cid}`: {_message(err)}")

    async def exec_capture(self, cid: str, process: dict, timeout: float) -> tuple[int, bytes]:
        """Run a process in the container, return (exit code, combined output); for health checks."""
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(process, f)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *self.global_args, "exec", "--process", f.name, cid,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                raise
            # communicate() has waited for the process, so returncode is set
            return proc.returncode, out  # type: ignore[return-value]
        finally:
            os.unlink(f.name)


def _message(err: bytes) -> str:
    """The runtime's stderr, readable (runc's JSON and logfmt lines become their `msg`)."""
    return conmon.runtime_message(err.decode(errors="replace"))


class InProcessKetchRuntime(OciRuntime):
    """ketch-runtime's non-forking operations called as a library, in a worker thread.

    start, kill, delete, state, pause, resume, ps and update only touch files, cgroups and
    signals, so ketchd can do them itself instead of starting an interpreter for each (about
    10 ms a call); create and exec fork into the container's namespaces and stay separate
    processes, run by conmon, exactly as with any runc-compatible runtime. Same state root,
    same code, same results as the command line.
    """

    async def _call(self, what: str, cid: str, fn, *args):
        from ketch import errors
        try:
            return await asyncio.to_thread(fn, self.root, cid, *args)
        except errors.NotFound as e:
            raise NotFound(f"{what} `{cid}`: {e}") from None
        except errors.FailedPrecondition as e:
            raise Conflict(f"{what} `{cid}`: {e}") from None
        except (errors.KetchError, OSError) as e:
            raise Internal(f"{what} `{cid}`: {e}") from None

    async def start(self, cid: str) -> None:
        from ketch.runtime import container
        await self._call("start container", cid, container.start)

    async def kill(self, cid: str, signal: str | int, all_: bool = False) -> None:
        from ketch.runtime import container
        await self._call("kill container", cid, container.kill, str(signal), all_)

    async def delete(self, cid: str, force: bool = True) -> None:
        from ketch.runtime import container
        try:
            await self._call("delete container", cid, container.delete, force)
        except NotFound:
            pass

    async def state(self, cid: str) -> dict | None:
        from ketch import errors
        from ketch.runtime import state as st

        def load(root, cid):
            return st.load(root, cid).runc_state()
        try:
            return await asyncio.to_thread(load, self.root, cid)
        except (errors.KetchError, OSError):
            return None

    async def pause(self, cid: str) -> None:
        from ketch.runtime import container
        await self._call("pause container", cid, container.pause)

    async def resume(self, cid: str) -> None:
        from ketch.runtime import container
        await self._call("unpause container", cid, container.resume)

    async def ps(self, cid: str) -> list[int]:
        from ketch.runtime import container
        return await self._call("list processes of", cid, container.pids)

    async def update(self, cid: str, resources: dict) -> None:
        from ketch.runtime import container
        await self._call("update container", cid, container.update, resources)


def for_binary(binary: str, root: str) -> OciRuntime:
    """The driver for a runtime binary: in-process for ketch-runtime, its command line otherwise."""
    if os.path.basename(binary) == "ketch-runtime" and os.environ.get("KETCH_RUNTIME_IN_PROCESS", "1") != "0":
        return InProcessKetchRuntime(binary, root)
    return OciRuntime(binary, root)
