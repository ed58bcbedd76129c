"""The Docker Engine API over raw HTTP: shapes, status codes, error bodies, stream framing."""

import base64
import io
import json
import socket
import struct
import tarfile
import time

from tests import helpers
from tests.engine.daemon import daemon_fixture

ketchd = daemon_fixture()


def q(obj) -> str:
    from urllib.parse import quote
    return quote(json.dumps(obj))


def create(d, name=None, **body):
    body.setdefault("Image", "busybox")
    q = f"?name={name}" if name else ""
    status, out = d.json("POST", f"/v1.43/containers/create{q}", body)
    assert status == 201, out
    return out["Id"]


def demux(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        stream, size = struct.unpack(">BxxxL", data[:8])
        out.append((stream, data[8:8 + size]))
        data = data[8 + size:]
    return out


def hijack(d, path: str, body=None):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(d.socket)
    raw = json.dumps(body).encode() if body is not None else b""
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode() + raw)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, head
        head += chunk
    return s, head.decode()


def read_all(s) -> bytes:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


# --- negotiation ---------------------------------------------------------------------

def test_ping_and_version_negotiation(ketchd):
    status, headers, body = ketchd.request("GET", "/_ping")
    assert status == 200 and body == b"OK"
    assert headers["Api-Version"] == "1.43" and headers["Ostype"] == "linux"
    status, headers, body = ketchd.request("HEAD", "/_ping")
    assert status == 200 and body == b""
    status, v = ketchd.json("GET", "/version", expect=200)
    assert v["ApiVersion"] == "1.43" and v["MinAPIVersion"] == "1.24" and v["Os"] == "linux"
    assert ketchd.json("GET", "/v1.24/version")[0] == 200
    status, err = ketchd.json("GET", "/v1.99/version")
    assert status == 400 and "too new" in err["message"] and "1.43" in err["message"]
    # before 1.24 dockerd answers errors as plain text, as clients of that age expect
    status, headers, body = ketchd.request("GET", "/v1.12/version")
    assert status == 400 and headers["Content-Type"].startswith("text/plain")
    assert body.decode().startswith("client version 1.12 is too old") and body.endswith(b"\n")


def test_info_and_df(ketchd):
    _, info = ketchd.json("GET", "/v1.43/info", expect=200)
    for key in ("Containers", "ContainersRunning", "Images", "Driver", "NCPU", "MemTotal", "OSType",
                "ServerVersion", "CgroupVersion", "LoggingDriver"):
        assert key in info
    assert info["LoggingDriver"] == "json-file"
    _, df = ketchd.json("GET", "/v1.43/system/df", expect=200)
    assert isinstance(df["Containers"], list) and isinstance(df["Images"], list)


# --- errors --------------------------------------------------------------------------

def test_error_bodies(ketchd):
    status, _, body = ketchd.request("POST", "/v1.43/containers/create", raw=b"{not json")
    assert status == 400 and "invalid JSON" in json.loads(body)["message"]
    status, err = ketchd.json("GET", "/v1.43/containers/nosuchthing/json")
    assert status == 404 and err["message"] == "No such container: nosuchthing"
    for method, path in (("POST", "/containers/nosuch/start"), ("POST", "/containers/nosuch/stop"),
                         ("DELETE", "/containers/nosuch"), ("GET", "/containers/nosuch/logs?stdout=1"),
                         ("POST", "/containers/nosuch/kill")):
        status, err = ketchd.json(method, "/v1.43" + path)
        assert status == 404 and err["message"] == "No such container: nosuch", (path, err)
    status, err = ketchd.json("POST", "/v1.43/containers/create", {"Image": "busybox", "Env": "A=1"})
    assert status == 400 and "Env" in err["message"] and "[]string" in err["message"]
    status, err = ketchd.json("POST", "/v1.43/containers/create",
                              {"Image": "busybox", "HostConfig": {"Memory": "lots"}})
    assert status == 400 and "Memory" in err["message"]
    status, err = ketchd.json("POST", "/v1.43/containers/create", {"Image": "nosuchimage"})
    assert status == 404 and err["message"] == "No such image: nosuchimage"
    status, err = ketchd.json("POST", "/v1.43/containers/create?name=bad%20name", {"Image": "busybox"})
    assert status == 400 and "Invalid container name" in err["message"]
    status, err = ketchd.json("POST", "/v1.43/containers/create",
                              {"Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}})
    assert status == 400 and "restart policy" in err["message"]
    status, err = ketchd.json("POST", "/v1.43/containers/create",
                              {"Image": "busybox", "HostConfig": {"CapAdd": ["NOT_A_CAP"]}})
    assert status == 400 and "capability" in err["message"]
    # the daemon is still fine
    assert ketchd.request("GET", "/_ping")[0] == 200


def test_name_in_use_and_rename(ketchd):
    cid = create(ketchd, "taken", Cmd=["true"])
    status, err = ketchd.json("POST", "/v1.43/containers/create?name=taken", {"Image": "busybox"})
    assert status == 409
    assert err["message"] == (f'Conflict. The container name "/taken" is already in use by container "{cid}". '
                              "You have to remove (or rename) that container to be able to reuse that name.")
    other = create(ketchd, "other", Cmd=["true"])
    status, err = ketchd.json("POST", f"/v1.43/containers/{other}/rename?name=taken")
    assert status == 409
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/rename?name=renamed")[0] == 204
    _, info = ketchd.json("GET", "/v1.43/containers/renamed/json", expect=200)
    assert info["Id"] == cid and info["Name"] == "/renamed"
    for c in (cid, other):
        assert ketchd.request("DELETE", f"/v1.43/containers/{c}")[0] == 204
    assert ketchd.json("GET", f"/v1.43/containers/{cid}/json")[0] == 404


# --- lifecycle -----------------------------------------------------------------------

def test_create_inspect_start_stop_remove(ketchd):
    cid = create(ketchd, "life", Cmd=["sleep", "60"], Labels={"team": "a"}, Env=["X=1"])
    _, info = ketchd.json("GET", f"/v1.43/containers/{cid}/json", expect=200)
    assert info["State"]["Status"] == "created" and info["Path"] == "sleep" and info["Args"] == ["60"]
    assert "X=1" in info["Config"]["Env"] and info["Config"]["Labels"] == {"team": "a"}
    assert info["HostConfig"]["LogConfig"]["Type"] == "json-file"
    assert "Ketch" not in info
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/start")[0] == 204
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/start")[0] == 304
    _, info = ketchd.json("GET", f"/v1.43/containers/{cid}/json", expect=200)
    assert info["State"]["Running"] and info["State"]["Pid"] > 0
    # list with filters
    _, lst = ketchd.json("GET", "/v1.43/containers/json?filters=" + q({"label": ["team=a"]}), expect=200)
    assert [c["Id"] for c in lst] == [cid] and lst[0]["State"] == "running" and lst[0]["Names"] == ["/life"]
    _, lst = ketchd.json("GET", "/v1.43/containers/json?filters=" + q({"status": ["exited"]}), expect=200)
    assert cid not in [c["Id"] for c in lst]
    status, err = ketchd.json("DELETE", f"/v1.43/containers/{cid}")
    assert status == 409 and "You cannot remove a running container" in err["message"]
    status, err = ketchd.json("POST", f"/v1.43/containers/{cid}/kill?signal=NOPE")
    assert status == 400 and "Invalid signal" in err["message"]
    status, _, _ = ketchd.request("POST", f"/v1.43/containers/{cid}/stop?t=1")
    assert status == 204
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/stop?t=1")[0] == 304
    _, info = ketchd.json("GET", f"/v1.43/containers/{cid}/json", expect=200)
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
    status, err = ketchd.json("POST", f"/v1.43/containers/{cid}/kill")
    assert status == 409 and "is not running" in err["message"]
    assert ketchd.request("DELETE", f"/v1.43/containers/{cid}")[0] == 204


def test_wait_conditions(ketchd):
    cid = create(ketchd, Cmd=["sh", "-c", "sleep 0.3; exit 3"])
    # not-running on a created container returns at once
    _, out = ketchd.json("POST", f"/v1.43/containers/{cid}/wait", expect=200)
    assert out["StatusCode"] == 0
    import threading
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=ketchd.json("POST", f"/v1.43/containers/{cid}/wait?condition=next-exit")))
    t.start()
    time.sleep(0.3)
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/start")[0] == 204
    t.join(20)
    assert result["r"] == (200, {"StatusCode": 3, "Error": None})
    status, err = ketchd.json("POST", f"/v1.43/containers/{cid}/wait?condition=sometime")
    assert status == 400
    ketchd.request("DELETE", f"/v1.43/containers/{cid}")


def test_start_missing_command_gives_127(ketchd):
    cid = create(ketchd, Cmd=["/no/such/binary"])
    status, err = ketchd.json("POST", f"/v1.43/containers/{cid}/start")
    assert status == 400 and "no such file or directory" in err["message"].lower()
    _, info = ketchd.json("GET", f"/v1.43/containers/{cid}/json")
    assert info["State"]["ExitCode"] == 127 and info["State"]["Status"] == "created"
    assert info["State"]["Error"]
    ketchd.request("DELETE", f"/v1.43/containers/{cid}")


# --- streams -------------------------------------------------------------------------

def test_logs_framing_tail_timestamps(ketchd):
    cid = create(ketchd, Cmd=["sh", "-c", "echo one; echo two >&2; printf 'no-newline'"])
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/start")[0] == 204
    ketchd.json("POST", f"/v1.43/containers/{cid}/wait", expect=200)
    status, headers, body = ketchd.request("GET", f"/v1.43/containers/{cid}/logs?stdout=1&stderr=1")
    assert status == 200 and headers["Content-Type"] == "application/vnd.docker.multiplexed-stream"
    frames = demux(body)
    assert (1, b"one\n") in frames and (2, b"two\n") in frames and (1, b"no-newline") in frames
    _, _, body = ketchd.request("GET", f"/v1.43/containers/{cid}/logs?stdout=1")
    assert all(s == 1 for s, _ in demux(body))
    _, _, body = ketchd.request("GET", f"/v1.43/containers/{cid}/logs?stdout=1&stderr=1&tail=1")
    assert len(demux(body)) == 1
    _, _, body = ketchd.request("GET", f"/v1.43/containers/{cid}/logs?stdout=1&timestamps=1")
    first = demux(body)[0][1].decode()
    ts, text = first.split(" ", 1)
    assert ts.endswith("Z") and ts[4] == "-" and "T" in ts and text == "one\n"
    _, _, body = ketchd.request("GET", f"/v1.43/containers/{cid}/logs?stdout=1&since={int(time.time()) + 60}")
    assert body == b""
    status, err = ketchd.json("GET", f"/v1.43/containers/{cid}/logs")
    assert status == 400 and "choose at least one stream" in err["message"]
    ketchd.request("DELETE", f"/v1.43/containers/{cid}")


def test_attach_hijack_stdin_stdout(ketchd):
    cid = create(ketchd, Cmd=["sh", "-c", "read x; echo got:$x; echo bye >&2"], OpenStdin=True, StdinOnce=True,
                 AttachStdin=True, AttachStdout=True, AttachStderr=True)
    s, head = hijack(ketchd, f"/v1.43/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1")
    assert head.startswith("HTTP/1.1 101") and "multiplexed-stream" in head
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/start")[0] == 204
    s.sendall(b"hello\n")
    s.shutdown(socket.SHUT_WR)
    frames = demux(read_all(s))
    s.close()
    assert (1, b"got:hello\n") in frames and (2, b"bye\n") in frames
    ketchd.request("DELETE", f"/v1.43/containers/{cid}?force=1")


def test_attach_tty_is_raw(ketchd):
    cid = create(ketchd, Cmd=["sh", "-c", "echo tty:$(tty)"], Tty=True)
    s, head = hijack(ketchd, f"/v1.43/containers/{cid}/attach?stream=1&stdout=1&stderr=1")
    assert "raw-stream" in head
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/start")[0] == 204
    out = read_all(s)
    s.close()
    assert out.startswith(b"tty:/dev/pts/") and out.endswith(b"\r\n")
    ketchd.request("DELETE", f"/v1.43/containers/{cid}?force=1")


def test_attach_detach_keys_leave_container_running(ketchd):
    cid = create(ketchd, Cmd=["sh"], Tty=True, OpenStdin=True, StdinOnce=True)
    assert ketchd.request("POST", f"/v1.43/containers/{cid}/start")[0] == 204
    s, head = hijack(ketchd, f"/v1.43/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1")
    s.sendall(b"echo mark-$((40+2))\n")
    out = b""
    while b"mark-42" not in out:
        out += s.recv(4096)
    s.sendall(b"\x10\x11")
    read_all(s)  # the server ends the attach
    s.close()
    _, info = ketchd.json("GET", f"/v1.43/containers/{cid}/json")
    assert info["State"]["Running"]
    # a second attach still talks to the same shell
    s, _ = hijack(ketchd, f"/v1.43/containers/{cid}/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-x")
    s.sendall(b"echo again-$((1+1))\n")
    out = b""
    while b"again-2" not in out:
        out += s.recv(4096)
    s.sendall(b"\x18")
    read_all(s)
    s.close()
    ketchd.request("DELETE", f"/v1.43/containers/{cid}?force=1")


def test_exec_hijack_and_inspect(ketchd):
    cid = create(ketchd, Cmd=["sleep", "60"])
    ketchd.request("POST", f"/v1.43/containers/{cid}/start")
    _, ex = ketchd.json("POST", f"/v1.43/containers/{cid}/exec",
                        {"Cmd": ["sh", "-c", "cat; echo err >&2; exit 5"], "AttachStdin": True,
                         "AttachStdout": True, "AttachStderr": True}, expect=201)
    s, head = hijack(ketchd, f"/v1.43/exec/{ex['Id']}/start", {"Detach": False, "Tty": False})
    assert head.startswith("HTTP/1.1 101")
    s.sendall(b"via-stdin\n")
    s.shutdown(socket.SHUT_WR)
    frames = demux(read_all(s))
    s.close()
    assert (1, b"via-stdin\n") in frames and (2, b"err\n") in frames
    _, info = ketchd.json("GET", f"/v1.43/exec/{ex['Id']}/json", expect=200)
    assert info["ExitCode"] == 5 and info["Running"] is False and info["ContainerID"] == cid
    status, err = ketchd.json("GET", "/v1.43/exec/nosuchexec/json")
    assert status == 404 and err["message"] == "No such exec instance: nosuchexec"
    # top and one-shot stats
    _, top = ketchd.json("GET", f"/v1.43/containers/{cid}/top", expect=200)
    assert "PID" in top["Titles"] and any("sleep" in " ".join(p) for p in top["Processes"])
    _, st = ketchd.json("GET", f"/v1.43/containers/{cid}/stats?stream=0&one-shot=1", expect=200)
    assert st["id"] == cid and st["memory_stats"]["usage"] > 0 and st["pids_stats"]["current"] >= 1
    assert st["cpu_stats"]["system_cpu_usage"] > 0
    ketchd.request("DELETE", f"/v1.43/containers/{cid}?force=1")
    status, err = ketchd.json("POST", f"/v1.43/containers/{cid}/exec", {"Cmd": ["true"]})
    assert status == 404


def test_exec_on_stopped_container_conflicts(ketchd):
    cid = create(ketchd, Cmd=["true"])
    status, err = ketchd.json("POST", f"/v1.43/containers/{cid}/exec", {"Cmd": ["true"]})
    assert status == 409 and "is not running" in err["message"]
    ketchd.request("DELETE", f"/v1.43/containers/{cid}")


def test_archive_head_get_put(ketchd):
    cid = create(ketchd, Cmd=["sleep", "60"])
    ketchd.request("POST", f"/v1.43/containers/{cid}/start")
    status, headers, _ = ketchd.request("HEAD", f"/v1.43/containers/{cid}/archive?path=/etc/passwd")
    assert status == 200
    stat = json.loads(base64.b64decode(headers["X-Docker-Container-Path-Stat"]))
    assert stat["name"] == "passwd" and stat["size"] > 0 and not stat["mode"] & (1 << 31)
    status, headers, body = ketchd.request("GET", f"/v1.43/containers/{cid}/archive?path=/etc")
    assert status == 200 and headers["Content-Type"] == "application/x-tar"
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
    assert "etc/passwd" in names
    status, _, body = ketchd.request("PUT", f"/v1.43/containers/{cid}/archive?path=/tmp",
                                     raw=helpers.tar_of({"newdir/file.txt": b"put-content\n"}),
                                     headers={"Content-Type": "application/x-tar"})
    assert status == 200, body
    _, _, body = ketchd.request("GET", f"/v1.43/containers/{cid}/archive?path=/tmp/newdir/file.txt")
    assert tarfile.open(fileobj=io.BytesIO(body)).extractfile("file.txt").read() == b"put-content\n"
    status, err = ketchd.json("HEAD", f"/v1.43/containers/{cid}/archive?path=/no/such")
    assert status == 404
    # a hostile member cannot climb out
    status, _, _ = ketchd.request("PUT", f"/v1.43/containers/{cid}/archive?path=/tmp",
                                  raw=helpers.tar_of({"../../../../escape.txt": b"x"}))
    assert status == 400
    ketchd.request("DELETE", f"/v1.43/containers/{cid}?force=1")


def test_events_stream_with_filters(ketchd):
    since = time.time()
    cid = create(ketchd, "evt", Cmd=["true"])
    ketchd.request("POST", f"/v1.43/containers/{cid}/start")
    ketchd.json("POST", f"/v1.43/containers/{cid}/wait")
    until = time.time() + 0.5
    flt = q({"container": ["evt"], "event": ["start", "die"]})
    status, _, body = ketchd.request("GET", f"/v1.43/events?since={since}&until={until}&filters={flt}")
    assert status == 200
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert [e["Action"] for e in events] == ["start", "die"]
    assert events[1]["Actor"]["Attributes"]["exitCode"] == "0" and events[0]["id"] == cid
    status, err = ketchd.json("GET", "/v1.43/events?filters=" + q({"bogus": ["x"]}))
    assert status == 400
    ketchd.request("DELETE", f"/v1.43/containers/{cid}")
