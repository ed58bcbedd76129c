"""The API facing hostile clients, against a real ketchd: bodies bounded (memory stays flat),
invalid or absurd JSON a 400 in Go's words, keys matched as Go's decoder matches them, the
endpoints clients probe answered as dockerd answers them, and clients that hang up mid-stream
leave no task behind."""

import json
import socket
import time

import pytest

from tests.engine.daemon import daemon_fixture, wait_for

ketchd = daemon_fixture()

NOT_A_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect '
                 'this node to swarm and try again.')


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect(d) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(d.socket)
    return s


def read_response(s: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    n = int(headers.get(b"Content-Length", b"0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest


def send_big(d, total: int, chunked: bool) -> tuple[int, bytes]:
    """A valid create body of `total` bytes (one huge label), sent as it is produced."""
    s = connect(d)
    head = b'{"Image": "busybox", "Labels": {"big": "'
    tail = b'"}}'
    te = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % total
    s.sendall(b"POST /v1.43/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + te + b"\r\n")
    piece = b"x" * (1 << 20)
    left = total - len(head) - len(tail)

    def send(data):
        s.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
    try:
        send(head)
        while left > 0:
            send(piece[:left])
            left -= len(piece)
        send(tail)
        if chunked:
            s.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon answered and hung up before the body ended: the answer is still there
    try:
        return read_response(s)
    finally:
        s.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_huge_create_body_refused_with_flat_memory(ketchd, chunked):
    before = rss_kib(ketchd.proc.pid)
    status, body = send_big(ketchd, 64 << 20, chunked)
    assert status == 413, body
    assert "at most 1048576 bytes" in json.loads(body)["message"]
    assert rss_kib(ketchd.proc.pid) - before < 32 * 1024
    assert ketchd.request("GET", "/_ping")[0] == 200
    # one just under the limit is read and refused for what it is, not for its size
    status, out = ketchd.json("POST", "/containers/create", {"Image": "no-such-image", "Labels": {"a": "x" * 1000}})
    assert status == 404


def test_invalid_and_deep_json_are_400s(ketchd):
    for raw, message in [
        (b'{"Image": busybox}',
         "invalid JSON: invalid character 'b' looking for beginning of value (at byte offset 10)"),
        (b'{"Image": "busybox"', "invalid JSON: unexpected EOF"),
        (b"[" * 100_000, "invalid JSON: exceeded max depth"),
        (b'{"a":' * 100_000, "invalid JSON: exceeded max depth"),
    ]:
        for path in ("/containers/create", "/containers/x/exec", "/containers/x/update", "/exec/x/start"):
            status, _, body = ketchd.request("POST", "/v1.43" + path, raw=raw)
            assert status == 400, (path, body)
            assert message in json.loads(body)["message"], (path, body)


def test_case_insensitive_keys_reach_the_engine(ketchd):
    status, out = ketchd.json("POST", "/containers/create?name=keys",
                              {"image": "busybox", "cmd": ["sleep", "30"], "labels": {"Mixed.Case": "v"},
                               "hostconfig": {"restartpolicy": {"name": "on-failure", "maximumretrycount": 2}}})
    assert status == 201, out
    st, c = ketchd.json("GET", "/containers/keys/json")
    assert c["Config"]["Cmd"] == ["sleep", "30"] and c["Config"]["Labels"] == {"Mixed.Case": "v"}
    assert c["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    ketchd.request("DELETE", "/containers/keys?force=1")


def test_docker_py_exec_detach_keys_round_trip(ketchd):
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=ketchd.host, version="1.43", timeout=60)
    try:
        c = client.containers.run("busybox", ["sleep", "60"], detach=True)
        try:
            eid = client.api.exec_create(c.id, ["true"], detach_keys="ctrl-x,x")["Id"]
            assert client.api.exec_inspect(eid)["DetachKeys"] == "ctrl-x,x"
        finally:
            c.remove(force=True)
    finally:
        client.close()


def test_swarm_plugin_session_endpoints_as_dockerd(ketchd):
    for method, path in [("GET", "/swarm"), ("GET", "/nodes"), ("GET", "/services"), ("GET", "/tasks"),
                         ("GET", "/secrets"), ("GET", "/configs"), ("POST", "/services/create"),
                         ("GET", "/services/abc"), ("DELETE", "/secrets/abc"), ("GET", "/swarm/unlockkey")]:
        status, _, body = ketchd.request(method, "/v1.43" + path)
        assert status == 503 and json.loads(body)["message"] == NOT_A_MANAGER, (path, status, body)
    status, _, body = ketchd.request("POST", "/swarm/leave")
    assert status == 503 and json.loads(body)["message"] == "This node is not part of a swarm"
    assert ketchd.json("GET", "/v1.43/plugins") == (200, [])
    status, _, body = ketchd.request("GET", "/plugins/some/plugin:1/json")
    assert status == 404 and json.loads(body)["message"] == 'plugin "some/plugin:1" not found'
    status, _, body = ketchd.request("POST", "/session", headers={"Upgrade": "h2c", "Connection": "Upgrade"})
    assert status == 501 and "session" in json.loads(body)["message"]
    status, _, body = ketchd.request("GET", "/distribution/busybox/json")
    assert status == 501
    # the docker CLI shows dockerd's sentence
    r = ketchd.docker("service", "ls", check=False)
    assert r.returncode != 0 and NOT_A_MANAGER in r.stderr


def test_old_api_versions_get_plain_text(ketchd):
    status, headers, body = ketchd.request("GET", "/v1.20/version")
    assert status == 400
    assert headers["Content-Type"].startswith("text/plain")
    assert body == (b"client version 1.20 is too old. Minimum supported API version is 1.24, "
                    b"please upgrade your client to a newer version\n")
    status, headers, body = ketchd.request("GET", "/v1.99/version")
    assert status == 400 and json.loads(body)["message"].startswith("client version 1.99 is too new")


# --- clients that hang up mid-stream ------------------------------------------------------

def tasks(d) -> int:
    return d.json("GET", "/info")[1]["NGoroutines"]


def hang_up(d, request: bytes, expect: bytes) -> None:
    s = connect(d)
    s.sendall(request)
    data = b""
    while expect not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.close()


@pytest.fixture
def chatty(ketchd):
    status, out = ketchd.json("POST", "/containers/create?name=chatty",
                              {"Image": "busybox", "Cmd": ["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
                               "OpenStdin": True, "AttachStdin": True, "AttachStdout": True})
    assert status == 201, out
    assert ketchd.request("POST", "/containers/chatty/start")[0] == 204
    wait_for(lambda: b"tick" in ketchd.request("GET", "/containers/chatty/logs?stdout=1")[2])
    yield "chatty"
    ketchd.request("DELETE", "/containers/chatty?force=1")


@pytest.mark.parametrize("name, request_, expect", [
    ("logs -f", b"GET /v1.43/containers/chatty/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"tick"),
    ("logs -f of nothing", b"GET /v1.43/containers/chatty/logs?follow=1&stderr=1 HTTP/1.1\r\nHost: x\r\n\r\n",
     b"200 OK"),
    ("attach", b"POST /v1.43/containers/chatty/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: x\r\n"
               b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n", b"tick"),
    ("events", b"GET /v1.43/events HTTP/1.1\r\nHost: x\r\n\r\n", b"200 OK"),
    ("stats", b"GET /v1.43/containers/chatty/stats?stream=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"cpu_stats"),
])
def test_hang_up_mid_stream_leaves_no_task(ketchd, chatty, name, request_, expect):
    time.sleep(0.5)
    base = tasks(ketchd)
    for _ in range(5):
        hang_up(ketchd, request_, expect)
    try:
        wait_for(lambda: tasks(ketchd) <= base, timeout=10)
    except AssertionError:
        raise AssertionError(f"{name}: {tasks(ketchd)} tasks after 5 hang-ups, {base} before") from None
    if name == "events":
        assert ketchd.json("GET", "/info")[1]["NEventsListener"] == 0
