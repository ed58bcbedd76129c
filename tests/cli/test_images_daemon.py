"""Every image command through ketchd: the ketch CLI, the real docker CLI and docker-py on one
socket see the same images; the endpoints the CLI needed (prune, import, auth, search,
OPTIONS, system check) in Docker's shapes; image events from the image service, whoever asked;
as a user who may not open the socket, every command says so in one line."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
import time

import pytest

from tests.images.conftest import (
    REPO,
    Ketch,
    htpasswd_line,
    push_raw,
    random_layer,
    start_daemon,
    start_registry,
    stop_daemon,
)


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("docker-config")
    d = start_daemon("imgd")
    k = Ketch(d, str(cfg))
    k("image", "base")
    yield k
    stop_daemon(d)


@pytest.fixture(scope="module")
def dpy(kd):
    docker = pytest.importorskip("docker")
    c = docker.DockerClient(base_url=kd.host, version="1.43")
    yield c
    c.close()


def _rootfs_tar(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o755
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _events(kd, since, actions=None):
    until = time.time() + 0.5
    st, _, body = kd.daemon.request("GET", f"/events?since={since}&until={until}&filters="
                                    + json.dumps({"type": ["image"]}).replace(" ", ""))
    assert st == 200
    evs = [json.loads(x) for x in body.splitlines() if x.strip()]
    return [e for e in evs if actions is None or e["Action"] in actions]


# ------------------------------------------------------------------------------ one daemon, every client

def test_ketch_docker_and_docker_py_see_the_same_images(kd, dpy):
    kid = kd("images", "-q", "--no-trunc", "busybox").stdout.split()
    did = kd.docker("images", "-q", "--no-trunc", "busybox").stdout.split()
    assert kid == did == [dpy.images.get("busybox").id]
    kd.docker("tag", "busybox", "seen-by/ketch:1")
    rows = kd("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.splitlines()
    assert f"seen-by/ketch:1 {kid[0][7:19]}" in rows
    kd("tag", "busybox", "seen-by/docker:2")
    assert "seen-by/docker:2" in dpy.images.get("busybox").tags
    assert "seen-by/docker" in kd.docker("images", "--format", "{{.Repository}}").stdout.split()
    # KETCH_HOST means the same daemon as -H, for image commands as for the others
    env = dict(kd.env, KETCH_HOST=kd.host)
    r = subprocess.run([*kd.cmd()[:3], "images", "-q", "--no-trunc", "busybox"], env=env, capture_output=True,
                       text=True, cwd=REPO)
    assert r.stdout.split() == kid
    kd("rmi", "seen-by/ketch:1", "seen-by/docker:2")
    assert not [t for t in dpy.images.get("busybox").tags if t.startswith("seen-by/")]


def test_base_image_built_on_the_client_is_the_in_process_one(kd):
    """`image base` loads the client-built archive through the daemon: same ID as make_base_image."""
    from ketch.images.base import make_base_image
    from ketch.images.service import ImageService
    svc = ImageService(os.path.join(kd.daemon.base, "direct"))
    assert make_base_image(svc) == json.loads(kd("image", "inspect", "busybox").stdout)[0]["Id"]
    out = kd("image", "base", "--tag", "base/again:1").stdout.split()
    assert out[0] == "base/again:1" and out[1] == svc.resolve("busybox")[0]
    kd("rmi", "base/again:1")


# ------------------------------------------------------------------------------ POST /images/prune

def test_prune_dangling_with_docker_and_filters(kd, dpy):
    since = time.time()
    # a dangling image: imported under a tag, then the tag moves away
    first = kd("import", "-", "prune/me:1", input=_rootfs_tar({"a": b"1"}).decode("latin-1"))
    first_id = first.stdout.strip()
    kd("import", "-c", "LABEL keep=yes", "-", "prune/me:1", input=_rootfs_tar({"a": b"2"}).decode("latin-1"))
    assert first_id in kd.docker("images", "-q", "--no-trunc", "-f", "dangling=true").stdout
    r = kd.docker("image", "prune", "-f")
    assert f"deleted: {first_id}" in r.stdout and "Total reclaimed space" in r.stdout
    assert first_id not in kd("images", "-q", "--no-trunc").stdout
    # label and until filters: the tagged image stays unless -a (dangling=false) and the label match
    labelled = json.loads(kd("image", "inspect", "prune/me:1").stdout)[0]["Id"]
    r = kd("image", "prune", "-a", "-f", "--filter", "label=keep=no")
    assert labelled not in r.stdout
    r = kd("image", "prune", "-a", "-f", "--filter", "until=2000-01-01T00:00:00Z")
    assert labelled not in r.stdout                                 # created after 2000: kept
    res = dpy.api.prune_images(filters={"dangling": False, "label": "keep=yes"})
    assert {"Deleted": labelled} in res["ImagesDeleted"] and res["SpaceReclaimed"] > 0
    assert dpy.images.list(name="busybox")                           # not labelled keep=yes: kept
    r = kd("image", "prune", "-f", "--filter", "until=banana", check=False)
    assert r.returncode == 1 and "until=banana" in r.stderr
    acts = [e["Action"] for e in _events(kd, since)]
    assert acts.count("prune") == 4 and "delete" in acts and "import" in acts


# ------------------------------------------------------------------------------ POST /images/create?fromSrc=-

def test_import_through_docker_ketch_and_docker_py(kd, dpy, tmp_path):
    data = _rootfs_tar({"bin/hello": b"#!/bin/sh\necho hi\n"})
    r = kd.docker("import", "-c", 'CMD ["/bin/hello"]', "-c", "ENV A=1", "-m", "by docker", "-", "imp/docker:1",
                  input=data.decode("latin-1"))
    iid = r.stdout.strip()
    assert iid.startswith("sha256:")
    insp = dpy.api.inspect_image("imp/docker:1")
    assert insp["Id"] == iid and insp["Config"]["Cmd"] == ["/bin/hello"] and insp["Config"]["Env"] == ["A=1"]
    assert [h["Comment"] for h in dpy.api.history("imp/docker:1")] == ["by docker"]
    p = tmp_path / "root.tar"
    p.write_bytes(data)
    kid = kd("import", "-m", "by ketch", str(p), "imp/ketch:1").stdout.strip()
    assert "by ketch" in kd("history", kid).stdout
    out = [json.loads(x) for x in dpy.api.import_image_from_data(data, repository="imp/py", tag="1",
                                                                 changes=["WORKDIR /bin"]).splitlines()]
    assert out[-1]["status"].startswith("sha256:")
    assert dpy.api.inspect_image("imp/py:1")["Config"]["WorkingDir"] == "/bin"
    # a URL source is refused with the reason (this daemon fetches nothing)
    st, _, body = kd.daemon.request("POST", "/images/create?fromSrc=http://127.0.0.1:1/x.tar")
    assert st == 400 and "only fromSrc=-" in json.loads(body)["message"]
    kd("rmi", "imp/docker:1", "imp/ketch:1", "imp/py:1")


# ------------------------------------------------------------------------------ POST /auth

def test_login_through_the_daemon_with_docker_ketch_and_docker_py(kd, dpy, tmp_path):
    htp = tmp_path / "htpasswd"
    htp.write_text(htpasswd_line("alice", "s3cret"))
    reg = start_registry(tmp_path, auth={"htpasswd": {"realm": "ketch-test", "path": str(htp)}}, name="authreg")
    cfg_file = os.path.join(kd.env["DOCKER_CONFIG"], "config.json")
    try:
        r = kd.docker("login", "-u", "alice", "--password-stdin", reg.domain, input="wrong\n", check=False)
        assert r.returncode == 1 and "Login Succeeded" not in r.stdout
        r = kd.docker("login", "-u", "alice", "--password-stdin", reg.domain, input="s3cret\n")
        assert "Login Succeeded" in r.stdout
        assert base64.b64decode(json.load(open(cfg_file))["auths"][reg.domain]["auth"]) == b"alice:s3cret"
        assert os.listdir(kd.daemon.daemon_docker_config) == []      # the daemon stored nothing
        kd.docker("logout", reg.domain)
        # ketch login writes what the docker CLI reads: docker push works with it
        assert "Login Succeeded" in kd("login", "-u", "alice", "-p", "s3cret", reg.domain).stdout
        kd.docker("tag", "busybox", f"{reg.domain}/private/bb:1")
        assert "digest: sha256:" in kd.docker("push", f"{reg.domain}/private/bb:1").stdout
        kd("logout", reg.domain)
        r = kd("push", f"{reg.domain}/private/bb:1", check=False)
        assert r.returncode == 1 and "authentication required" in r.stderr
        assert dpy.api.login("alice", "s3cret", registry=reg.domain, reauth=True)["Status"] == "Login Succeeded"
        st, _, body = kd.daemon.request("POST", "/v1.43/auth", {"username": "alice", "password": "nope",
                                                                 "serveraddress": f"http://{reg.domain}/v2/"})
        assert st in (401, 403) and json.loads(body)["message"], body
        st, _, body = kd.daemon.request("POST", "/auth", {"username": "alice", "password": "s3cret",
                                                         "serveraddress": reg.domain})
        assert st == 200 and json.loads(body) == {"Status": "Login Succeeded", "IdentityToken": ""}
        kd("rmi", f"{reg.domain}/private/bb:1")
    finally:
        reg.stop()


# ------------------------------------------------------------------------------ GET /images/search, OPTIONS

def test_search_says_no_index_is_configured(kd, dpy):
    import docker
    r = kd.docker("search", "busybox", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: ")
    assert "no index configured" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = kd("search", "busybox", check=False)
    assert r.returncode == 1 and "no index configured" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(docker.errors.APIError) as e:
        dpy.api.search("busybox")
    assert e.value.status_code == 501 and "no index configured" in str(e.value)


@pytest.mark.parametrize("path", ["/_ping", "/v1.43/containers/json", "/v1.41/images/busybox/json", "/no/such/route"])
def test_options_on_any_path_answers_204(kd, path):
    st, headers, body = kd.daemon.request("OPTIONS", path)
    assert st == 204 and body == b"" and headers.get("Api-Version") == "1.43"


# ------------------------------------------------------------------------------ system check through the daemon

def test_system_check_through_the_ketch_endpoint(kd):
    r = kd("system", "check")
    assert "0 problems" in r.stdout and "images" in r.stdout
    st, _, body = kd.daemon.request("POST", "/ketch/system/check")
    res = json.loads(body)
    assert st == 200 and res["Problems"] == [] and res["Images"] >= 1 and res["Blobs"] >= 3


# ------------------------------------------------------------------------------ image events from the service

def test_image_events_reach_events_whoever_asked(kd, dpy, tmp_path):
    reg = start_registry(tmp_path)
    try:
        push_raw(reg.domain, "ev/pulled:1", [random_layer("ev", 2000)])
        since = time.time()
        kd("pull", "-q", f"{reg.domain}/ev/pulled:1")                     # ketch
        dpy.api.tag("busybox", f"{reg.domain}/ev/pushed", "2")            # docker-py
        kd.docker("push", f"{reg.domain}/ev/pushed:2")                    # docker CLI
        saved = str(tmp_path / "s.tar")
        kd("save", "-o", saved, f"{reg.domain}/ev/pulled:1")
        kd.docker("rmi", f"{reg.domain}/ev/pulled:1")
        kd.docker("load", "-i", saved)
        kd("rmi", f"{reg.domain}/ev/pushed:2")
        evs = _events(kd, since)
        got = [(e["Action"], e["Actor"]["Attributes"].get("name")) for e in evs]
        pulled, pushed = f"{reg.domain}/ev/pulled:1", f"{reg.domain}/ev/pushed:2"
        assert ("pull", f"{reg.domain}/ev/pulled") in got
        assert ("tag", pushed) in got and ("push", f"{reg.domain}/ev/pushed") in got
        assert ("untag", pulled) in got and ("load", pulled) in got and ("untag", pushed) in got
        pull_ev = next(e for e in evs if e["Action"] == "pull")
        assert pull_ev["Actor"]["ID"] == pulled and pull_ev["status"] == "pull" and pull_ev["Type"] == "image"
        deleted = [e["Actor"]["ID"] for e in evs if e["Action"] == "delete"]
        assert deleted and all(d.startswith("sha256:") for d in deleted)
        # the docker CLI reads them too
        r = kd.docker("events", "--since", str(int(since)), "--until", str(int(time.time()) + 1),
                      "--filter", "type=image", "--format", "{{.Action}}")
        assert {"pull", "tag", "push", "untag", "delete", "load"} <= set(r.stdout.split())
    finally:
        reg.stop()


# ------------------------------------------------------------------------------ a user who may not open the socket

@pytest.mark.parametrize("args", [["images"], ["pull", "busybox"], ["image", "inspect", "busybox"], ["rmi", "x"],
                                  ["image", "prune", "-f"], ["system", "check"], ["image", "base"],
                                  ["login", "-u", "a", "-p", "b", "127.0.0.1:1"], ["search", "x"], ["ps"],
                                  ["run", "--rm", "busybox", "true"], ["info"]])
def test_non_root_without_the_socket_gets_one_line(kd, args):
    os.chmod(kd.daemon.exec_root, 0o711)  # the socket is reachable by path, its 0660 mode refuses nobody
    # the CLI from a copy nobody can read (the checkout may sit in a 0700 directory, as in CI)
    import shutil
    import tempfile
    pub = tempfile.mkdtemp(prefix="ketch-cli-pub-")
    try:
        os.chmod(pub, 0o755)
        shutil.copytree(os.path.join(REPO, "ketch"), os.path.join(pub, "ketch"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        launcher = (f"import sys; sys.path.insert(0, '{pub}'); from ketch.cli.main import main; "
                    "sys.exit(main())")
        cmd = " ".join(["/usr/bin/python3", "-I", "-S", "-c", f'"{launcher}"', "-H", kd.host,
                        *[f"'{a}'" for a in args]])
        r = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"HOME=/tmp {cmd}"], capture_output=True,
                           text=True, timeout=60)
    finally:
        shutil.rmtree(pub, ignore_errors=True)
    assert r.returncode in (1, 125), (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "permission denied while trying to connect to the Ketch daemon socket" in lines[0], r.stderr
