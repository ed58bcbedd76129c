"""The Docker SDK for Python against ketchd, unchanged."""

import os
import time

import pytest

from tests import helpers
from tests.engine.daemon import daemon_fixture, wait_for

docker = pytest.importorskip("docker")

ketchd = daemon_fixture()


@pytest.fixture(scope="module")
def client(ketchd):
    c = docker.DockerClient(base_url=ketchd.host, version="auto", timeout=60)
    yield c
    c.close()


def test_ping_version_info(client):
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.43"
    assert client.api.api_version == "1.43"
    assert "Containers" in client.info()


def test_run_logs_remove(client):
    out = client.containers.run("busybox", ["sh", "-c", "echo hello; echo oops >&2"], remove=True, stderr=True)
    assert b"hello\n" in out and b"oops\n" in out
    with pytest.raises(docker.errors.ContainerError) as e:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert e.value.exit_status == 3
    with pytest.raises(docker.errors.ImageNotFound):
        client.api.create_container("no-such-image-here", "true")  # run() would then try a pull
    with pytest.raises(docker.errors.NotFound) as e:
        client.containers.get("nosuch")
    assert "No such container: nosuch" in str(e.value)
    # an anonymous volume is mounted; docker-py's remove=True removes the container without v=True,
    # so the volume stays, dangling, for a prune (as with dockerd)
    before = {v.name for v in client.volumes.list()}
    out = client.containers.run("busybox", ["sh", "-c", "grep -c ' /data ' /proc/mounts"], volumes=["/data"],
                                remove=True)
    left = {v.name for v in client.volumes.list(filters={"dangling": True})} - before
    assert out == b"1\n" and len(left) == 1
    assert client.volumes.prune()["VolumesDeleted"] == list(left)


def test_detached_exec_stats_attach(client):
    c = client.containers.run("busybox", ["sh", "-c", "echo ready; sleep 60"], detach=True, name="py1",
                              labels={"via": "sdk"})
    try:
        wait_for(lambda: b"ready" in c.logs())
        c.reload()
        assert c.status == "running" and c.name == "py1" and c.labels == {"via": "sdk"}
        assert [x.id for x in client.containers.list(filters={"label": "via=sdk"})] == [c.id]
        code, out = c.exec_run(["sh", "-c", "echo $((6*7))"])
        assert code == 0 and out == b"42\n"
        code, (so, se) = c.exec_run(["sh", "-c", "echo a; echo b >&2; exit 2"], demux=True)
        assert code == 2 and so == b"a\n" and se == b"b\n"
        code, out = c.exec_run("id -u", user="app")
        assert out == b"1000\n"
        s = c.stats(stream=False)
        assert s["memory_stats"]["usage"] > 0 and s["name"] == "/py1"
        stream = c.stats(stream=True, decode=True)
        first, second = next(stream), next(stream)
        assert second["precpu_stats"]["cpu_usage"]["total_usage"] == first["cpu_stats"]["cpu_usage"]["total_usage"]
        top = c.top()
        assert any("sleep" in " ".join(p) for p in top["Processes"])
        c.rename("py2")
        c.reload()
        assert c.name == "py2"
        c.pause()
        c.reload()
        assert c.status == "paused"
        c.unpause()
        c.stop(timeout=1)
        c.reload()
        assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
        assert c.wait()["StatusCode"] == 137
    finally:
        c.remove(force=True)


def test_attach_socket_and_logs_stream(client):
    c = client.containers.create("busybox", ["sh", "-c", "for i in 1 2 3; do echo l$i; sleep 0.2; done"])
    try:
        c.start()
        lines = [chunk for chunk in c.logs(stream=True, follow=True)]
        assert b"".join(lines) == b"l1\nl2\nl3\n"
        assert c.wait(condition="not-running")["StatusCode"] == 0
        ts = c.logs(timestamps=True).decode().splitlines()[0]
        assert ts.split(" ", 1)[1] == "l1"
        assert c.logs(tail=1) == b"l3\n"
    finally:
        c.remove()


def test_put_get_archive(client):
    import io
    import tarfile
    c = client.containers.run("busybox", ["sleep", "60"], detach=True)
    try:
        assert c.put_archive("/tmp", helpers.tar_of({"hello.txt": b"hi\n"})) is True
        bits, stat = c.get_archive("/tmp/hello.txt")
        data = b"".join(bits)
        assert stat["name"] == "hello.txt" and stat["size"] == 3
        assert tarfile.open(fileobj=io.BytesIO(data)).extractfile("hello.txt").read() == b"hi\n"
    finally:
        c.remove(force=True)


def test_events_and_images(client):
    since = time.time()
    c = client.containers.run("busybox", "true", detach=True)
    c.wait()
    c.remove()
    evs = list(client.events(since=since, until=time.time() + 0.2, decode=True,
                             filters={"type": "container", "container": c.id}))
    assert [e["Action"] for e in evs] == ["create", "start", "die", "destroy"]
    tags = [t for im in client.images.list() for t in im.tags]
    assert "busybox:latest" in tags


def test_refusals_validation_and_kill_through_docker_py(client):
    with pytest.raises(docker.errors.APIError, match="invalid proto") as e:
        client.containers.create("busybox", "true", ports={"80/icmp": 8080})
    assert e.value.status_code == 400
    with pytest.raises(docker.errors.APIError, match="Minimum memory limit allowed is 6MB") as e:
        client.containers.create("busybox", "true", mem_limit="5m")
    assert e.value.status_code == 400
    with pytest.raises(docker.errors.APIError, match="range for oom score adj") as e:
        client.containers.create("busybox", "true", oom_score_adj=2000)
    assert e.value.status_code == 400
    c = client.containers.run("busybox", ["sleep", "300"], detach=True)
    c.kill()
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
    c.remove()


def _tar(name: str, data: bytes) -> bytes:
    return helpers.tar_of({name: data})


def test_cp_names_have_no_whiteout_meaning(client):
    import io
    import tarfile
    c = client.containers.run("busybox", ["sleep", "60"], detach=True)
    try:
        assert c.put_archive("/tmp", _tar(".wh.notes", b"notes\n")) is True
        assert c.exec_run(["cat", "/tmp/.wh.notes"]).output == b"notes\n"
        bits, _ = c.get_archive("/tmp/.wh.notes")
        member = tarfile.open(fileobj=io.BytesIO(b"".join(bits))).getmember(".wh.notes")
        assert member.isfile() and member.size == 6
    finally:
        c.remove(force=True)


def test_cp_into_a_container_that_swaps_symlinks_stays_inside(client):
    """CVE-2018-15664: a running container swaps the destination for a symlink to / while files are
    copied in; nothing lands on the host, and no copy answers a 500."""
    import uuid
    c = client.containers.run("busybox", ["sh", "-c", "mkdir -p /w/d; while :; do mv /w/d /w/x; ln -s / /w/d; "
                                                      "rm /w/d; mv /w/x /w/d; done"], detach=True)
    tag = uuid.uuid4().hex
    try:
        errors = []
        for i in range(60):
            try:
                c.put_archive("/w/d", _tar(f"escape-{tag}-{i}", b"x"))
            except docker.errors.APIError as e:
                errors.append((e.status_code, str(e.explanation)) if e.status_code >= 500 else e.status_code)
        assert not [x for x in errors if isinstance(x, tuple)], errors
        assert not [n for n in os.listdir("/") if n.startswith(f"escape-{tag}")]
    finally:
        c.remove(force=True)


def test_exec_start_frames_by_the_start_bodys_tty(client):
    """docker-py's exec_create(tty=True) then exec_start() sends Tty: false: the stream is framed
    (stdcopy), as dockerd frames it, and docker-py demultiplexes it."""
    c = client.containers.run("busybox", ["sleep", "60"], detach=True)
    try:
        eid = client.api.exec_create(c.id, ["sh", "-c", "echo out; echo err >&2"], tty=True)["Id"]
        out = client.api.exec_start(eid, demux=True)
        assert out[0].replace(b"\r", b"") == b"out\nerr\n" and out[1] is None   # a pty: one stream, framed
        eid = client.api.exec_create(c.id, ["sh", "-c", "echo out; echo err >&2"], detach_keys="ctrl-x")["Id"]
        assert client.api.exec_inspect(eid)["DetachKeys"] == "ctrl-x"     # docker-py's detachKeys read
        assert client.api.exec_start(eid, demux=True) == (b"out\n", b"err\n")
    finally:
        c.remove(force=True)
