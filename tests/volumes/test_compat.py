"""Volumes through the real clients against a private ketchd: the docker CLI (/usr/bin/docker),
docker-py's volume API and Debian's docker-compose 1.29 with a named volume in a compose file."""

import json
import shutil

import pytest

from tests.cli.test_containers import _make_base
from tests.engine.daemon import DOCKER, daemon_fixture, wait_for

docker = pytest.importorskip("docker")
COMPOSE = shutil.which("docker-compose")

ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


@pytest.fixture
def clean(ketchd):
    yield
    for cid in ketchd.docker("ps", "-aq").stdout.split():
        ketchd.docker("rm", "-f", cid, check=False)
    ketchd.docker("volume", "prune", "-af", check=False)


@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
def test_docker_cli_volume_flows(ketchd, clean):
    d = ketchd.docker
    assert d("volume", "create", "--label", "k=v", "dv").stdout == "dv\n"
    assert d("volume", "ls").stdout == "DRIVER    VOLUME NAME\nlocal     dv\n"
    assert d("volume", "ls", "-f", "label=k=v", "--format", "{{.Name}} {{.Driver}} {{.Label \"k\"}}").stdout == \
        "dv local v\n"
    v = json.loads(d("volume", "inspect", "dv").stdout)[0]
    assert v["Labels"] == {"k": "v"} and v["Mountpoint"].endswith("/volumes/dv/_data")
    d("run", "--rm", "-v", "dv:/data", "busybox", "sh", "-c", "echo persisted > /data/f")
    assert d("run", "--rm", "-v", "dv:/data", "busybox", "cat", "/data/f").stdout == "persisted\n"
    # two at once, and the refusal while in use
    a = d("run", "-d", "-v", "dv:/data", "busybox", "sh", "-c",
          "while [ ! -f /data/ping ]; do sleep 0.05; done; echo pong > /data/pong; sleep 60").stdout.strip()
    r = d("run", "--rm", "--mount", "source=dv,target=/data", "busybox", "sh", "-c",
          "touch /data/ping; i=0; while [ ! -f /data/pong ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done;"
          " cat /data/pong")
    assert r.stdout == "pong\n"
    r = d("volume", "rm", "dv", check=False)
    assert r.returncode == 1 and f"remove dv: volume is in use - [{a}]" in r.stderr
    mounts = json.loads(d("inspect", "-f", "{{json .Mounts}}", a).stdout)
    assert mounts == [{"Type": "volume", "Name": "dv", "Source": v["Mountpoint"], "Destination": "/data",
                       "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}]
    # --volumes-from, read-only
    r = d("run", "--rm", "--volumes-from", f"{a}:ro", "busybox", "sh", "-c",
          "cat /data/f; touch /data/x 2>/dev/null || echo ro")
    assert r.stdout.split() == ["persisted", "ro"]
    d("rm", "-f", a)
    # anonymous volumes: rm -v and --rm take them
    before = d("volume", "ls", "-q").stdout.split()
    d("run", "--rm", "-v", "/scratch", "busybox", "sh", "-c", "echo > /scratch/x")
    c = d("create", "-v", "/anon", "busybox", "true").stdout.strip()
    anon = json.loads(d("inspect", "-f", "{{json .Mounts}}", c).stdout)[0]["Name"]
    assert sorted(d("volume", "ls", "-q").stdout.split()) == sorted(before + [anon])
    d("rm", "-v", c)
    assert d("volume", "ls", "-q").stdout.split() == before
    # prune: anonymous only unless -a
    c = d("create", "-v", "/anon", "busybox", "true").stdout.strip()
    anon = json.loads(d("inspect", "-f", "{{json .Mounts}}", c).stdout)[0]["Name"]
    d("rm", c)
    r = d("volume", "prune", "-f")
    assert f"Deleted Volumes:\n{anon}\n" in r.stdout and "dv" in d("volume", "ls", "-q").stdout.split()
    r = d("volume", "prune", "-a", "-f")
    assert "dv" in r.stdout and d("volume", "ls", "-q").stdout == ""
    # a tmpfs volume with its size
    d("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=3m", "tv")
    r = d("run", "--rm", "-v", "tv:/tv", "busybox", "grep", " /tv ", "/proc/mounts")
    assert r.stdout.split()[2] == "tmpfs" and "size=3072k" in r.stdout
    r = d("volume", "create", "-o", "bogus=1", "bad", check=False)
    assert r.returncode == 1 and 'create bad: invalid option: "bogus"' in r.stderr
    r = d("volume", "create", "-d", "flocker", "bad", check=False)
    assert r.returncode == 1 and "plugin \"flocker\" not found" in r.stderr
    # docker system df sees the volume
    d("run", "--rm", "-v", "tv:/tv", "busybox", "true")
    assert "tv" in d("system", "df", "-v").stdout


def test_docker_py_volume_api(ketchd, clean):
    client = docker.DockerClient(base_url=ketchd.host, version="1.43", timeout=60)
    try:
        vol = client.volumes.create("pyvol", labels={"team": "py"})
        assert vol.name == "pyvol" and vol.attrs["Driver"] == "local"
        assert [v.name for v in client.volumes.list(filters={"label": "team=py"})] == ["pyvol"]
        assert client.volumes.get("pyvol").attrs["Mountpoint"] == vol.attrs["Mountpoint"]
        client.containers.run("busybox", ["sh", "-c", "echo from-py > /v/f"], volumes={"pyvol": {"bind": "/v"}},
                              remove=True)
        out = client.containers.run("busybox", ["cat", "/v/f"], volumes=["pyvol:/v:ro"], remove=True)
        assert out == b"from-py\n"
        c = client.containers.create("busybox", ["sleep", "60"], volumes={"pyvol": {"bind": "/v", "mode": "rw"}})
        with pytest.raises(docker.errors.APIError) as e:
            vol.remove()
        assert e.value.status_code == 409 and "volume is in use" in str(e.value)
        c.remove(v=True)
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get("nosuch")
        with pytest.raises(docker.errors.APIError) as e:
            client.volumes.create("bad", driver_opts={"nope": "1"})
        assert e.value.status_code == 400
        client.api.create_volume("pyanon2", labels={"com.docker.volume.anonymous": ""})
        assert client.volumes.prune() == {"VolumesDeleted": ["pyanon2"], "SpaceReclaimed": 0}
        assert client.volumes.prune(filters={"all": "true"})["VolumesDeleted"] == ["pyvol"]
        assert client.volumes.list() == []
    finally:
        client.close()


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")
def test_compose_with_a_named_volume(ketchd, tmp_path, clean):
    (tmp_path / "docker-compose.yml").write_text(
        "version: '3.8'\n"
        "services:\n"
        "  writer:\n"
        "    image: busybox\n"
        "    command: ['sh', '-c', 'echo $$HOSTNAME >> /data/log; sleep 60']\n"
        "    volumes: ['store:/data']\n"
        "  reader:\n"
        "    image: busybox\n"
        "    command: ['sh', '-c', 'sleep 60']\n"
        "    volumes: ['store:/data:ro']\n"
        "volumes:\n"
        "  store:\n"
        "    labels: {purpose: test}\n")

    def compose(*args, check=True):
        return ketchd.compose(tmp_path, "kvol", *args, check=check)
    compose("up", "-d")
    try:
        v = json.loads(ketchd.docker("volume", "inspect", "kvol_store").stdout)[0]
        assert v["Labels"]["purpose"] == "test" and v["Labels"]["com.docker.compose.project"] == "kvol"

        def written():
            r = compose("exec", "-T", "reader", "cat", "/data/log", check=False)
            return r.returncode == 0 and r.stdout.strip() and r.stdout
        first = wait_for(written, timeout=20)
        compose("down", "-t", "0")
        assert "kvol_store" in ketchd.docker("volume", "ls", "-q").stdout.split()   # down keeps volumes
        compose("up", "-d")
        wait_for(lambda: (written() or "").count("\n") == 2, timeout=20)
        assert written().startswith(first)   # the first run's line is still there
    finally:
        compose("down", "-v", "-t", "0", check=False)
    assert "kvol_store" not in ketchd.docker("volume", "ls", "-q").stdout.split()
