"""Container logs (ketch/engine/logs.py): conmon's k8s-file lines read back with Docker's semantics."""

import asyncio
import os

import pytest

from ketch.engine import logs
from ketch.errors import InvalidArgument

T0 = 1_700_000_000 * 10**9      # 2023-11-14T22:13:20Z


def line(sec, stream, tag, text, frac="000000001"):
    """One conmon line at T0 + sec seconds, written in +01:00 local time as conmon does."""
    import datetime
    t = datetime.datetime.fromtimestamp(T0 // 10**9 + sec, datetime.timezone(datetime.timedelta(hours=1)))
    return f"{t.strftime('%Y-%m-%dT%H:%M:%S')}.{frac}+01:00 {stream} {tag} {text}\n".encode()


def collect(path, **kw):
    async def go():
        opts = {"follow": False, "tail": None, "since": None, "until": None, "running": lambda: False}
        opts.update(kw)
        return [e async for e in logs.stream(path, **opts)]
    return asyncio.run(go())


@pytest.mark.parametrize("value, ns", [
    (None, None), ("", None), ("0", None),
    ("1700000000", T0), ("1700000000.5", T0 + 500_000_000), ("1700000000.000000001", T0 + 1),
    ("2023-11-14T22:13:20Z", T0), ("2023-11-14T23:13:20+01:00", T0), ("2023-11-14T22:13:20.25Z", T0 + 250_000_000),
    ("2023-11-14T22:13:20", T0),
])
def test_parse_time(value, ns):
    assert logs.parse_time(value) == ns


@pytest.mark.parametrize("bad", ["yesterday", "2023-13-45T00:00:00Z", "1.2.3"])
def test_parse_time_refuses_with_dockers_message(bad):
    with pytest.raises(InvalidArgument, match=f'failed to parse value as time or duration: "{bad}"'):
        logs.parse_time(bad)


@pytest.mark.parametrize("value, n", [("10", 10), ("10b", 10), ("1k", 1024), ("2kb", 2048), ("1m", 1 << 20),
                                      ("1.5M", 3 << 19), (" 3g ", 3 << 30), ("1GB", 1 << 30)])
def test_parse_size(value, n):
    assert logs.parse_size(value) == n


@pytest.mark.parametrize("bad", ["", "k", "-1m", "0", "ten", "1t"])
def test_parse_size_refuses(bad):
    with pytest.raises(InvalidArgument, match="invalid max-size"):
        logs.parse_size(bad)


def test_convert_timestamp_to_utc_keeps_nanoseconds():
    assert logs.convert_timestamp("2023-11-14T23:13:20.123456789+01:00") == \
        ("2023-11-14T22:13:20.123456789Z", T0 + 123456789)
    assert logs.convert_timestamp("2023-11-14T22:13:20.100Z") == ("2023-11-14T22:13:20.1Z", T0 + 100_000_000)
    assert logs.convert_timestamp("2023-11-14T22:13:20Z") == ("2023-11-14T22:13:20Z", T0)


def test_parse_line():
    assert logs.parse_line(b"TS stdout F hello world") == ("TS", "stdout", False, b"hello world")
    assert logs.parse_line(b"TS stderr P part") == ("TS", "stderr", True, b"part")
    assert logs.parse_line(b"TS stdout F") == ("TS", "stdout", False, b"")
    assert logs.parse_line(b"garbage") is None


def write_log(path, *lines):
    with open(path, "ab") as f:
        for ln in lines:
            f.write(ln)


def test_partial_lines_are_joined_per_stream_and_bad_lines_skipped(tmp_path):
    p = str(tmp_path / "ctr.log")
    write_log(p, line(0, "stdout", "P", "hel"), line(1, "stderr", "F", "oops"), b"not a log line\n",
              line(2, "stdout", "P", "lo "), line(3, "stdout", "F", "world"), line(4, "stdout", "F", ""))
    got = [(e.stream, e.data, e.ns) for e in logs.read_entries(p)]
    assert got == [("stderr", b"oops\n", T0 + 1 * 10**9 + 1), ("stdout", b"hello world\n", T0 + 1),
                   ("stdout", b"\n", T0 + 4 * 10**9 + 1)]
    assert [e.data for e in collect(p)] == [b"oops\n", b"hello world\n", b"\n"]


def test_stream_reads_rotated_files_oldest_first_then_tail_since_until(tmp_path):
    p = str(tmp_path / "ctr.log")
    write_log(p + ".2", line(0, "stdout", "F", "zero"))
    write_log(p + ".1", line(1, "stdout", "F", "one"), line(2, "stderr", "F", "two"))
    write_log(p, line(3, "stdout", "F", "three"), line(4, "stdout", "P", "unfinished"))
    assert logs.files_of(p) == [p + ".2", p + ".1", p]
    assert [e.data for e in collect(p)] == [b"zero\n", b"one\n", b"two\n", b"three\n", b"unfinished"]
    assert [e.data for e in collect(p, tail=2)] == [b"three\n", b"unfinished"]
    assert collect(p, tail=0) == []
    assert [e.data for e in collect(p, since=T0 + 2 * 10**9)] == [b"two\n", b"three\n", b"unfinished"]
    assert [e.data for e in collect(p, until=T0 + 1 * 10**9 + 1)] == [b"zero\n", b"one\n"]
    assert [e.stream for e in collect(p, since=T0 + 10**9, until=T0 + 2 * 10**9 + 1)] == ["stdout", "stderr"]
    assert collect(str(tmp_path / "missing.log")) == []


def test_follow_sees_what_is_written_later_and_across_a_rotation(tmp_path):
    p = str(tmp_path / "ctr.log")
    write_log(p, line(0, "stdout", "F", "before"))
    state = {"running": True}

    async def go():
        got = []

        async def writer():
            await asyncio.sleep(0.15)
            write_log(p, line(1, "stdout", "P", "split "))
            await asyncio.sleep(0.15)
            write_log(p, line(2, "stdout", "F", "line"))
            await asyncio.sleep(0.15)
            assert logs.rotate_if_needed(p, 1, 3)
            write_log(p, line(3, "stderr", "F", "after rotation"))
            await asyncio.sleep(0.3)
            state["running"] = False
        w = asyncio.ensure_future(writer())
        async for e in logs.stream(p, follow=True, tail=None, since=None, until=None,
                                   running=lambda: state["running"]):
            got.append(e.data)
        await w
        return got
    assert asyncio.run(asyncio.wait_for(go(), 10)) == [b"before\n", b"split line\n", b"after rotation\n"]


def test_rotation_shifts_and_drops_the_oldest(tmp_path):
    p = str(tmp_path / "ctr.log")
    assert logs.rotate_if_needed(p, 10, 3) == (False, False)   # no file yet
    for gen in range(4):
        with open(p, "w") as f:
            f.write(f"gen{gen}" * 3)
        assert logs.rotate_if_needed(p, 1000, 3) == (False, False)   # below max-size: stays (held)
        assert logs.rotate_if_needed(p, 5, 3) == (True, True)   # past 1.5 max-size, uncut: ketchd's own
        assert not os.path.exists(p) and not os.path.exists(p + ".pending")
    assert sorted(os.listdir(tmp_path)) == ["ctr.log.1", "ctr.log.2"]     # max-file 3: live + 2 kept
    assert open(p + ".1").read().startswith("gen3") and open(p + ".2").read().startswith("gen2")
    with open(p, "w") as f:
        f.write("x" * 10)
    assert logs.rotate_if_needed(p, 5, 1)[0]                # max-file 1: the live file is dropped
    assert not os.path.exists(p) and os.path.exists(p + ".1")
    with open(p, "w") as f:
        f.write("x" * 10)
    assert logs.rotate_if_needed(p, 0, 3) == (False, False)  # max-size 0: no rotation


def test_a_file_conmon_cut_is_kept_by_its_link_and_becomes_dot_1(tmp_path):
    """conmon (--log-size-max) cuts by renaming a new file over the name; the round before held the
    old one by a hard link (.pending), which is read in order and then renamed .1."""
    p = str(tmp_path / "ctr.log")
    write_log(p, line(0, "stdout", "F", "zero"))
    assert logs.rotate_if_needed(p, 100, 3) == (False, False)
    assert os.stat(p).st_ino == os.stat(p + ".pending").st_ino and logs.files_of(p) == [p]

    def cut(text, i):  # what conmon does at max-size
        with open(p + ".tmp", "wb") as f:
            f.write(line(i, "stdout", "F", text))
        os.rename(p + ".tmp", p)
    cut("one", 1)
    assert logs.files_of(p) == [p + ".pending", p]          # before ketchd's round: read in order too
    assert [e.data for e in collect(p)] == [b"zero\n", b"one\n"]
    assert logs.rotate_if_needed(p, 100, 3) == (False, True)
    assert sorted(os.listdir(tmp_path)) == ["ctr.log", "ctr.log.1", "ctr.log.pending"]
    for i, text in enumerate(("two", "three"), 2):
        cut(text, i)
        logs.rotate_if_needed(p, 100, 3)
    assert sorted(os.listdir(tmp_path)) == ["ctr.log", "ctr.log.1", "ctr.log.2", "ctr.log.pending"]
    assert [e.data for e in collect(p)] == [b"one\n", b"two\n", b"three\n"]   # max-file 3
    cut("four", 4)
    logs.rotate_if_needed(p, 100, 1)                       # max-file 1: nothing is kept
    assert sorted(os.listdir(tmp_path)) == ["ctr.log", "ctr.log.1", "ctr.log.2"]


def test_follow_with_since_skips_what_is_older_written_later_too(tmp_path):
    """`logs -f --since T`: lines older than T are skipped, also the ones that arrive while following."""
    p = str(tmp_path / "ctr.log")
    write_log(p, line(0, "stdout", "F", "old"))
    state = {"running": True}

    async def go():
        async def writer():
            await asyncio.sleep(0.15)
            write_log(p, line(1, "stdout", "F", "still old"))
            write_log(p, line(5, "stdout", "F", "new"))
            await asyncio.sleep(0.3)
            state["running"] = False
        w = asyncio.ensure_future(writer())
        got = [e.data async for e in logs.stream(p, follow=True, tail=None, since=T0 + 3 * 10**9, until=None,
                                                 running=lambda: state["running"])]
        await w
        return got
    assert asyncio.run(asyncio.wait_for(go(), 10)) == [b"new\n"]
