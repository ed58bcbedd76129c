"""A signal sent the moment start returns reaches the container's process (issue 8).

start returns once the process has been exec'd; a program then installs its handlers some
milliseconds later, and until it does the kernel drops a signal to PID 1 of a namespace: kill
lets such a signal wait (a bounded grace after start) until the program catches it. Both calls
are made in-process, as ketchd makes them: nothing between start, kill and the check."""

import os
import time

import pytest

from ketch.runtime import container as rtc
from ketch.runtime import state as st

PROGRAMS = {
    "busybox-top": ["busybox", "top"],
    "sh-trap": ["sh", "-c", 'trap "exit 7" TERM; while :; do sleep 0.01; done'],
}


def _ended(root, cid, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if st.load(root, cid).status() == st.STOPPED:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_term_right_after_start_ends_every_container(rt, prog):
    ids = []
    for _ in range(20):
        b = rt.bundle(PROGRAMS[prog])
        r = rt.rt("create", "--bundle", b.path, b.id)
        assert r.returncode == 0, r.stderr
        ids.append(b.id)
    for cid in ids:
        state = rtc.start(rt.root, cid)
        # start returned after the execve: the process is the user's program already
        assert os.readlink(f"/proc/{state.pid}/exe") == "/bin/busybox"
        rtc.kill(rt.root, cid, "TERM")
    running = [cid for cid in ids if not _ended(rt.root, cid)]
    assert not running, f"{len(running)}/20 still running after TERM"
    for cid in ids:
        rtc.delete(rt.root, cid)


def test_a_signal_the_program_never_catches_costs_at_most_the_grace(rt):
    """`sleep` as PID 1 never catches TERM: kill waits out the grace, then sends as any runtime."""
    b = rt.bundle(["sleep", "30"])
    assert rt.rt("create", "--bundle", b.path, b.id).returncode == 0
    rtc.start(rt.root, b.id)
    t = time.monotonic()
    rtc.kill(rt.root, b.id, "TERM")
    assert time.monotonic() - t < rtc.HANDLER_GRACE + 0.3
    t = time.monotonic()
    rtc.kill(rt.root, b.id, "TERM")      # later than the grace: no wait at all
    assert time.monotonic() - t < 0.1
    rtc.kill(rt.root, b.id, "KILL")
    assert _ended(rt.root, b.id)
    rtc.delete(rt.root, b.id)
