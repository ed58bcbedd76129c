"""List and prune filters as Docker's, through docker-py and the docker CLI against a ketchd
with the real image service: images by label, label!, reference globs, dangling, before and
since; containers by label, label!, ancestor, network, volume, health, exited, is-task; prune
by label and until; unknown filters and bad values are 400s."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from tests import helpers
from tests.images.conftest import Ketch, start_daemon, stop_daemon

docker = pytest.importorskip("docker")


def rootfs(name: str) -> bytes:
    return helpers.tar_of({name: name.encode()})


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    d = start_daemon("filters")
    k = Ketch(d, str(tmp_path_factory.mktemp("docker-config")))
    k("image", "base")
    # three images, made in order, with labels
    for i, (ref, label) in enumerate([("flt/one:1", "team=a"), ("flt/two:2", "team=b"), ("other/three:3", "x=1")]):
        repo, tag = ref.split(":")
        st, _, body = d.request("POST", f"/images/create?fromSrc=-&repo={repo}&tag={tag}&changes="
                                + urllib.parse.quote(f"LABEL {label}"), raw=rootfs(f"f{i}"),
                                headers={"Content-Type": "application/x-tar"})
        assert st == 200 and b"error" not in body, body
        time.sleep(1.1)  # Created is in seconds: before/since need distinct times
    yield k
    stop_daemon(d)


@pytest.fixture(scope="module")
def dpy(kd):
    c = docker.DockerClient(base_url=kd.host, version="1.43", timeout=60)
    yield c
    c.close()


def tags(images) -> set[str]:
    return {t for im in images for t in im.tags}


def test_image_label_filters(kd, dpy):
    assert tags(dpy.images.list(filters={"label": "team"})) == {"flt/one:1", "flt/two:2"}
    assert tags(dpy.images.list(filters={"label": "team=a"})) == {"flt/one:1"}
    assert tags(dpy.images.list(filters={"label": ["team", "x=1"]})) == set()
    names = kd.docker("images", "--filter", "label=team=b", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert names == ["flt/two:2"]
    st, _, body = kd.daemon.request("GET", "/images/json?filters=" + urllib.parse.quote(json.dumps(
        {"label!": ["team"]})))
    got = {t for im in json.loads(body) for t in im["RepoTags"]}
    assert "flt/one:1" not in got and "other/three:3" in got and "busybox:latest" in got


def test_image_reference_dangling_before_since(kd, dpy):
    assert tags(dpy.images.list(name="flt/*")) == {"flt/one:1", "flt/two:2"}
    assert tags(dpy.images.list(filters={"reference": "*/t*"})) == {"flt/two:2", "other/three:3"}
    assert tags(dpy.images.list(filters={"reference": "flt/one:1"})) == {"flt/one:1"}
    assert kd.docker("images", "--filter", "reference=*", "--format", "{{.Repository}}").stdout.split() == ["busybox"]
    assert tags(dpy.images.list(filters={"before": "flt/two:2"})) >= {"flt/one:1"}
    assert "other/three:3" not in tags(dpy.images.list(filters={"before": "flt/two:2"}))
    assert tags(dpy.images.list(filters={"since": "flt/one:1"})) == {"flt/two:2", "other/three:3"}
    # a tag removed leaves its image dangling
    iid = dpy.images.get("other/three:3").id
    kd.docker("tag", "other/three:3", "other/keep:1")
    kd.docker("rmi", "other/three:3", "other/keep:1")
    assert iid not in {im.id for im in dpy.images.list(filters={"dangling": True})}  # removed, not dangling
    assert all(im.tags for im in dpy.images.list(filters={"dangling": False}))


def test_bad_image_filters_are_400(kd, dpy):
    for f, msg in [({"bogus": ["x"]}, "invalid filter 'bogus'"),
                   ({"dangling": ["maybe"]}, "invalid filter 'dangling=maybe'"),
                   ({"reference": ["["]}, "invalid filter 'reference=['")]:
        with pytest.raises(docker.errors.APIError) as e:
            dpy.api.images(filters=f)
        assert e.value.status_code == 400 and msg in str(e.value)
    r = kd.docker("images", "--filter", "bogus=1", check=False)
    assert r.returncode != 0 and "invalid filter 'bogus'" in r.stderr


@pytest.fixture(scope="module")
def containers(kd, dpy):
    made = [
        dpy.containers.create("busybox", ["true"], name="f-a", labels={"app": "web", "tier": "1"}),
        dpy.containers.create("flt/one:1", ["true"], name="f-b", labels={"app": "db"}),
        dpy.containers.run("busybox", ["sh", "-c", "exit 3"], name="f-c", detach=True,
                           volumes={"/tmp": {"bind": "/hostdata", "mode": "ro"}}, network_mode="host"),
        dpy.containers.run("busybox", ["sleep", "60"], name="f-d", detach=True,
                           healthcheck={"test": ["CMD", "true"], "interval": 200_000_000}),
    ]
    made[2].wait()
    yield {c.name: c for c in made}
    for c in made:
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass


def names(cs) -> set[str]:
    return {c.name for c in cs}


def test_container_filters(kd, dpy, containers):
    ls = dpy.containers.list
    assert names(ls(all=True, filters={"label": "app"})) == {"f-a", "f-b"}
    assert names(ls(all=True, filters={"label": "app=web"})) == {"f-a"}
    assert names(ls(all=True, filters={"label": ["app", "tier=1"]})) == {"f-a"}
    assert "f-a" not in names(ls(all=True, filters={"label!": "app=web"}))
    assert names(ls(all=True, filters={"ancestor": "flt/one:1"})) == {"f-b"}
    bb = dpy.images.get("busybox").id
    assert names(ls(all=True, filters={"ancestor": "busybox"})) >= {"f-a", "f-c", "f-d"}
    assert names(ls(all=True, filters={"ancestor": bb[7:19]})) == names(ls(all=True, filters={"ancestor": bb}))
    assert "f-b" not in names(ls(all=True, filters={"ancestor": "busybox:latest"}))
    assert names(ls(all=True, filters={"volume": "/hostdata"})) == {"f-c"}
    assert names(ls(all=True, filters={"volume": "/tmp"})) == {"f-c"}
    assert names(ls(all=True, filters={"network": "host"})) == {"f-c"}
    # loopback only (the default until bridges land) is the network "none", as inspect says
    assert "f-c" not in names(ls(all=True, filters={"network": "none"}))
    assert names(ls(all=True, filters={"exited": 3})) == {"f-c"}
    assert names(ls(all=True, filters={"is-task": "true"})) == set()
    assert {"f-a", "f-b"} <= names(ls(all=True, filters={"is-task": "false"}))
    deadline = time.time() + 20
    while time.time() < deadline and names(ls(filters={"health": "healthy"})) != {"f-d"}:
        time.sleep(0.2)
    assert names(ls(filters={"health": "healthy"})) == {"f-d"}
    assert "f-a" in names(ls(all=True, filters={"health": "none"}))
    out = kd.docker("ps", "-a", "--filter", "label=app=db", "--format", "{{.Names}}").stdout.split()
    assert out == ["f-b"]
    out = kd.docker("ps", "-a", "--filter", "ancestor=flt/one", "--filter", "status=created",
                    "--format", "{{.Names}}").stdout.split()
    assert out == []  # flt/one means flt/one:latest, which does not exist
    for f, msg in [({"bogus": "1"}, "invalid filter 'bogus'"), ({"health": "sick"}, "Unrecognised filter value"),
                   ({"exited": "x"}, "invalid filter 'exited=x'")]:
        with pytest.raises(docker.errors.APIError) as e:
            dpy.api.containers(all=True, filters=f)
        assert e.value.status_code == 400 and msg in str(e.value), e.value


def test_container_prune_filters(kd, dpy, containers):
    a = dpy.containers.create("busybox", ["true"], name="p-a", labels={"prune": "yes"})
    b = dpy.containers.create("busybox", ["true"], name="p-b", labels={"prune": "no"})
    r = kd.docker("container", "prune", "-f", "--filter", "label=prune=yes")
    assert a.id in r.stdout and b.id not in r.stdout
    assert names(dpy.containers.list(all=True, filters={"label": "prune"})) == {"p-b"}
    res = dpy.containers.prune(filters={"label!": "prune", "until": "1h"})  # nothing that old
    assert not res.get("ContainersDeleted")
    res = dpy.containers.prune(filters={"label": "prune=no", "until": str(int(time.time()) + 5)})
    assert res["ContainersDeleted"] == [b.id]
    with pytest.raises(docker.errors.APIError) as e:
        dpy.containers.prune(filters={"ancestor": "busybox"})
    assert e.value.status_code == 400 and "invalid filter 'ancestor'" in str(e.value)
