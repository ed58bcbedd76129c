"""Through ketchd and the docker CLI: a container stopped or killed the moment `run -d` returns
ends by its TERM (busybox top catches it), well inside the stop timeout, and `wait` returns."""

import time

import pytest

from tests.engine.daemon import DOCKER, daemon_fixture

pytestmark = pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed")

ketchd = daemon_fixture()


def test_stop_right_after_run_ends_by_term(ketchd):
    for i in range(5):
        cid = ketchd.docker("run", "-d", "busybox", "top").stdout.strip()
        t = time.monotonic()
        ketchd.docker("stop", "-t", "5", cid)
        took = time.monotonic() - t
        code = ketchd.docker("wait", cid, timeout=10).stdout.strip()
        # TERM reached top (143 is its answer to TERM); a lost TERM would cost the 5 s and end by KILL (137)
        assert took < 3 and code == "143", (i, took, code)
        ketchd.docker("rm", cid)


def test_kill_term_right_after_run_ends_it(ketchd):
    for i in range(5):
        cid = ketchd.docker("run", "-d", "busybox", "top").stdout.strip()
        ketchd.docker("kill", "-s", "TERM", cid)
        t = time.monotonic()
        code = ketchd.docker("wait", cid, timeout=10).stdout.strip()
        assert time.monotonic() - t < 3 and code == "143", (i, code)
        ketchd.docker("rm", cid)
