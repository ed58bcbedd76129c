"""The Docker SDK for Python (docker-py) against ketchd on the real image service."""

import io
import tarfile
import time

import pytest

from tests import helpers

docker = pytest.importorskip("docker")


@pytest.fixture(scope="module")
def client(ketchd):
    c = docker.DockerClient(base_url=ketchd.host, version="auto", timeout=60)
    yield c
    c.close()


def test_sdk_workflow(client):
    assert client.ping()
    assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
    with pytest.raises(docker.errors.ContainerError) as e:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert e.value.exit_status == 3
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("nosuchimage:1")
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("ghost")
    since = int(time.time()) - 1
    c = client.containers.run("busybox", ["sh", "-c", "echo one; sleep 300"], detach=True, name="py1")
    assert [x.name for x in client.containers.list()] == ["py1"]
    time.sleep(0.3)
    assert c.logs() == b"one\n"
    r = c.exec_run(["sh", "-c", "echo two; exit 2"])
    assert (r.exit_code, r.output) == (2, b"two\n")
    c.reload()
    assert c.status == "running" and c.attrs["Config"]["Cmd"][0] == "sh"
    assert c.put_archive("/tmp", helpers.tar_of({"sdk.txt": b"sdk\n"}))
    stream, stat = c.get_archive("/tmp/sdk.txt")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
        assert tf.extractfile("sdk.txt").read() == b"sdk\n"
    assert stat["name"] == "sdk.txt"
    s = c.stats(stream=False)
    assert s["pids_stats"]["current"] >= 1 and s["memory_stats"]["usage"] > 0
    c.stop(timeout=1)
    c.remove()
    ev = list(client.events(since=since, until=int(time.time()) + 1, decode=True,
                            filters={"container": "py1"}))
    assert [e["Action"] for e in ev][:1] == ["create"] and "destroy" in [e["Action"] for e in ev]
    assert any("busybox:latest" in i.tags for i in client.images.list())


def test_sdk_push_pull(client, registry):
    ref = f"{registry.domain}/sdk/bb"
    client.images.get("busybox").tag(ref, "2")
    out = client.images.push(ref, tag="2")
    assert "error" not in out
    client.images.remove(f"{ref}:2")
    img = client.images.pull(ref, tag="2")
    assert f"{ref}:2" in img.tags
    assert client.containers.run(f"{ref}:2", ["echo", "ok"], remove=True) == b"ok\n"
    client.images.remove(f"{ref}:2")
