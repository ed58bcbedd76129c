"""The monitor's pure parts (ketch/monitor): conmon's paths and arguments, exit files, the sync pipe,
the control fifo and the attach socket's packets; no conmon, no root."""

import asyncio
import json
import os
import socket
import subprocess
import time

import pytest

from ketch.errors import Internal, NotFound, Unavailable
from ketch.monitor import attach, conmon


def paths(tmp_path, log=None):
    return conmon.MonitorPaths.under(str(tmp_path / "mon"), str(tmp_path / "bundle"), log)


def test_paths_under_a_directory(tmp_path):
    p = paths(tmp_path, "/var/log/c.log")
    d = str(tmp_path / "mon")
    assert (p.pid_file, p.conmon_pid_file, p.exit_dir, p.persist_dir) == \
        (f"{d}/pidfile", f"{d}/conmon.pid", f"{d}/exits", f"{d}/persist")
    assert p.bundle == str(tmp_path / "bundle") and p.log_path == "/var/log/c.log"
    assert p.exit_file("abc") == f"{d}/exits/abc"


def test_conmon_arguments(tmp_path):
    p = paths(tmp_path, "/logs/c.log")
    args = conmon._base_args("/usr/bin/conmon", "/x/ketch-runtime", ["--root", "/run/r"], "cid1", "uuid1", "name1",
                             p, terminal=True, stdin=True, leave_stdin_open=False)
    assert args[0] == "/usr/bin/conmon"
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--api-version"] == "1" and pairs["-c"] == "cid1" and pairs["-u"] == "uuid1"
    assert pairs["-r"] == "/x/ketch-runtime" and pairs["-b"] == p.bundle and pairs["-p"] == p.pid_file
    assert args[args.index("--exit-dir") + 1] == p.exit_dir and args[args.index("--persist-dir") + 1] == p.persist_dir
    assert args[args.index("-l") + 1] == "k8s-file:/logs/c.log"
    i = args.index("--runtime-arg")
    assert args[i:i + 4] == ["--runtime-arg", "--root", "--runtime-arg", "/run/r"]
    assert "-t" in args and "-i" in args and "--leave-stdin-open" not in args
    plain = conmon._base_args("conmon", "rt", [], "c", "u", "n", paths(tmp_path), terminal=False, stdin=False,
                              leave_stdin_open=True)
    assert plain[plain.index("-l") + 1] == "none"
    assert "-t" not in plain and "-i" not in plain and "--leave-stdin-open" in plain and "--runtime-arg" not in plain


@pytest.mark.parametrize("content, code", [("0", 0), ("137\n", 137), (" 1 ", 1), ("", None), ("x", None)])
def test_read_exit_file(tmp_path, content, code):
    f = tmp_path / "exit"
    f.write_text(content)
    assert conmon.read_exit_file(str(f)) == code


def test_read_exit_file_missing(tmp_path):
    assert conmon.read_exit_file(str(tmp_path / "nope")) is None


def test_oom_marker_in_persist_dir_or_bundle(tmp_path):
    p = paths(tmp_path)
    os.makedirs(p.persist_dir)
    os.makedirs(p.bundle)
    assert not conmon.oom_killed(p)
    open(os.path.join(p.bundle, "oom"), "w").close()
    assert conmon.oom_killed(p)
    os.unlink(os.path.join(p.bundle, "oom"))
    open(os.path.join(p.persist_dir, "oom"), "w").close()
    assert conmon.oom_killed(p)


def test_conmon_pid_checks_the_process_is_the_containers_conmon(tmp_path):
    p = paths(tmp_path)
    os.makedirs(os.path.dirname(p.conmon_pid_file))
    assert conmon.conmon_pid(p, "cid-1") is None                       # no pid file
    # a stand-in whose command line looks like conmon's for cid-1 (argv[0] "conmon")
    proc = subprocess.Popen(["conmon", "-c", "sleep 30; :", "cid-1"], executable="/bin/sh")
    try:
        for _ in range(200):                                            # until the child has exec'd
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                if f.read().startswith(b"conmon\0"):
                    break
            time.sleep(0.01)
        with open(p.conmon_pid_file, "w") as f:
            f.write(f"{proc.pid}\n")
        assert conmon.conmon_pid(p, "cid-1") == proc.pid
        assert conmon.conmon_pid(p, "cid-2") is None                   # another container's
        proc.kill()
        for _ in range(100):                                            # a zombie is not a live conmon
            if conmon.conmon_pid(p, "cid-1") is None:
                break
            time.sleep(0.01)
        assert conmon.conmon_pid(p, "cid-1") is None
    finally:
        proc.kill()
        proc.wait()
    assert conmon.conmon_pid(p, "cid-1") is None                       # gone
    with open(p.conmon_pid_file, "w") as f:
        f.write(f"{os.getpid()}\n")                                     # a live process, not conmon
    assert conmon.conmon_pid(p, "cid-1") is None
    with open(p.conmon_pid_file, "w") as f:
        f.write("garbage")
    assert conmon.conmon_pid(p, "cid-1") is None


def test_runtime_messages_are_cleaned():
    runc_json = json.dumps({"level": "error", "msg": 'exec: "nope": executable file not found in $PATH'})
    logfmt = 'time="2024-01-01T00:00:00Z" level=error msg="container_linux.go: \\"quoted\\" path"'
    assert conmon.runtime_message(f"{runc_json}\n\n{logfmt}\nplain line\n") == \
        'exec: "nope": executable file not found in $PATH; container_linux.go: "quoted" path; plain line'
    assert conmon.runtime_message("{not json") == "{not json"


def test_sync_pipe_messages():
    async def go():
        r, w = os.pipe()
        reader = conmon._PipeLines(r)
        try:
            os.write(w, b'{"data": 42}\n{"data": -1, "mess')
            assert await reader.message() == {"data": 42}
            later = asyncio.ensure_future(reader.message())
            await asyncio.sleep(0.05)
            assert not later.done()                                     # half a line: still waiting
            os.write(w, b'age": "boom"}\nnot json\n')
            assert await later == {"data": -1, "message": "boom"}
            with pytest.raises(Internal, match="bad message"):
                await reader.message()
            os.close(w)
            assert await reader.message() is None                      # EOF
        finally:
            reader.close()
    asyncio.run(asyncio.wait_for(go(), 5))


def test_control_fifo(tmp_path):
    bundle = str(tmp_path)
    with pytest.raises(Unavailable, match="monitor control"):
        conmon.resize(bundle, 24, 80)                                   # no fifo: conmon is gone
    os.mkfifo(os.path.join(bundle, "ctl"))
    with pytest.raises(Unavailable, match="monitor control"):
        conmon.reopen_log(bundle)                                       # a fifo nobody reads
    rfd = os.open(os.path.join(bundle, "ctl"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        conmon.resize(bundle, 24, 80)
        conmon.reopen_log(bundle)
        assert os.read(rfd, 100) == b"1 24 80\n2 0 0\n"
    finally:
        os.close(rfd)


def test_attach_socket_packets(tmp_path):
    async def go():
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        srv.bind(str(tmp_path / "attach"))
        srv.listen(1)
        conn = await attach.AttachConnection.open(str(tmp_path))
        peer, _ = srv.accept()
        try:
            for packet in (b"\x02out", b"\x09unknown stream", b"\x03err", b"\x02"):
                peer.send(packet)
            assert await conn.read() == ("stdout", b"out")
            assert await conn.read() == ("stderr", b"err")           # the unknown stream byte is skipped
            assert await conn.read() == ("stdout", b"")
            await conn.send(b"x" * 20000)
            peer.setblocking(False)
            await asyncio.sleep(0.05)
            assert [len(peer.recv(65536)) for _ in range(3)] == [8192, 8192, 3616]
            conn.close_stdin()
            await asyncio.sleep(0.05)
            assert peer.recv(65536) == b""                             # stdin's EOF reaches conmon
            peer.close()
            assert await conn.read() is None
        finally:
            conn.close()
            srv.close()
    asyncio.run(asyncio.wait_for(go(), 5))


def test_attach_to_a_missing_socket_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="attach to"):
        asyncio.run(conmon.connect_attach(str(tmp_path)))
