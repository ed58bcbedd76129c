"""Networks through docker-py's network API and Debian's docker-compose 1.29, against ketchd."""

import shutil
import time

import pytest

from tests.engine.daemon import daemon_fixture, wait_for

docker = pytest.importorskip("docker")
COMPOSE = shutil.which("docker-compose")

ketchd = daemon_fixture()


@pytest.fixture
def client(ketchd):
    c = docker.DockerClient(base_url=ketchd.host, version="1.43", timeout=60)
    yield c
    c.close()


def test_docker_py_network_api(ketchd, client):
    octet = ketchd.pool_octet
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=f"10.{octet}.220.0/24",
                                                                       gateway=f"10.{octet}.220.254")])
    net = client.networks.create("pynet", driver="bridge", ipam=ipam, labels={"team": "a"})
    try:
        assert net.attrs["IPAM"]["Config"] == [{"Subnet": f"10.{octet}.220.0/24", "Gateway": f"10.{octet}.220.254"}]
        assert [n.name for n in client.networks.list(filters={"label": "team=a"})] == ["pynet"]
        srv = client.containers.run("busybox", ["sleep", "60"], name="pysrv", network="pynet", detach=True)
        try:
            net.reload()
            assert srv.id in net.attrs["Containers"]
            ip = net.attrs["Containers"][srv.id]["IPv4Address"].split("/")[0]
            assert ip.startswith(f"10.{octet}.220.")
            out = client.containers.run("busybox", ["nslookup", "pysrv"], network="pynet", remove=True)
            assert ip.encode() in out
            other = client.containers.run("busybox", ["sleep", "60"], name="pyother", detach=True)
            try:
                net.connect(other, aliases=["late"])
                other.reload()
                assert "pynet" in other.attrs["NetworkSettings"]["Networks"]
                out = client.containers.run("busybox", ["nslookup", "late"], network="pynet", remove=True)
                assert other.attrs["NetworkSettings"]["Networks"]["pynet"]["IPAddress"].encode() in out
                net.disconnect(other)
                other.reload()
                assert "pynet" not in other.attrs["NetworkSettings"]["Networks"]
            finally:
                other.remove(force=True)
        finally:
            srv.remove(force=True)
        with pytest.raises(docker.errors.APIError) as e:
            client.networks.create("pynet")
        assert e.value.status_code == 409
    finally:
        net.remove()
    with pytest.raises(docker.errors.NotFound):
        client.networks.get("pynet")
    assert client.networks.prune() == {"NetworksDeleted": None}


def test_published_port_through_docker_py(ketchd, client):
    c = client.containers.run("busybox", ["nc", "-ll", "-p", "80", "-e", "echo", "pong"], ports={"80/tcp": None},
                              detach=True)
    try:
        c.reload()
        port = int(c.ports["80/tcp"][0]["HostPort"])

        def answer():
            try:
                import socket
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    return s.recv(100)
            except OSError:
                return None
        assert b"pong" in wait_for(answer)
    finally:
        c.remove(force=True)


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")
def test_compose_up_of_two_services_that_find_each_other_by_name(ketchd, tmp_path):
    (tmp_path / "docker-compose.yml").write_text(
        "version: '3.8'\n"
        "services:\n"
        "  web:\n"
        "    image: busybox\n"
        "    command: ['nc', '-ll', '-p', '80', '-e', 'echo', 'hello-from-web']\n"
        "  client:\n"
        "    image: busybox\n"
        "    depends_on: [web]\n"
        "    command: ['sh', '-c', 'sleep 0.5; nc -w 3 web 80; sleep 60']\n")

    def compose(*args, check=True):
        return ketchd.compose(tmp_path, "kcompose", *args, check=check)
    compose("up", "-d")
    try:
        def said():
            r = compose("logs", "client", check=False)
            return "hello-from-web" in r.stdout and r.stdout
        assert wait_for(said, timeout=20)
        names = ketchd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert "kcompose_default" in names
    finally:
        compose("down", "-t", "0", check=False)
    time.sleep(0.2)
    assert "kcompose_default" not in ketchd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
