"""A registry that accepts connections and never answers: the client gives up within its
timeouts (asked once more, not `retries` times over), with a message naming the registry."""

import asyncio
import socket
import time

import pytest

from ketch.errors import Unavailable
from ketch.registry import RegistryClient


@pytest.fixture
def silent_registry():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)            # connections are accepted by the kernel; nothing ever answers
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


def test_a_registry_that_never_answers_times_out_naming_it(silent_registry):
    async def go():
        async with RegistryClient(read_timeout=0.5, connect_timeout=0.5, retries=4, backoff=0.01) as c:
            await c.get_manifest(f"{silent_registry}/app:latest")
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as e:
        asyncio.run(go())
    elapsed = time.monotonic() - t0
    assert silent_registry in str(e.value) and "did not answer within 0.5s" in str(e.value)
    assert elapsed < 3, elapsed   # two tries of 0.5 s, not five


def test_a_cancelled_request_to_a_silent_registry_ends_at_once(silent_registry):
    async def go():
        async with RegistryClient(read_timeout=60) as c:
            t = asyncio.ensure_future(c.get_manifest(f"{silent_registry}/app:latest"))
            await asyncio.sleep(0.2)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(t, 5)
            return len([x for x in asyncio.all_tasks() if x is not asyncio.current_task()])
    assert asyncio.run(go()) == 0


def test_ketchd_takes_the_timeouts_from_daemon_json_and_a_pull_names_the_registry(silent_registry, tmp_path):
    """Through ketchd: `registry-read-timeout` in daemon.json bounds a pull from a silent registry."""
    import json

    from tests.engine.daemon import KetchDaemon
    d = KetchDaemon(str(tmp_path / "d"), "ketch.images.async_service:AsyncImageService")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "daemon.json").write_text(json.dumps({"registry-read-timeout": 0.5,
                                                            "registry-connect-timeout": 0.5}))
    d.start()
    try:
        t0 = time.monotonic()
        _status, _headers, body = d.request("POST", f"/images/create?fromImage={silent_registry}/app&tag=latest")
        elapsed = time.monotonic() - t0
        text = body.decode()
        assert "did not answer within 0.5s" in text and silent_registry in text, text
        assert elapsed < 5, elapsed
    finally:
        d.stop()
        d.cleanup()
