"""Copy-on-write made visible, end to end on ketchd with the real image service: diff, commit, export
through the ketch CLI, the API, the real docker CLI and docker-py."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time

import pytest

from tests.storage.conftest import events, image_config, layer_members, run_until

# what the test containers change: an add, a change, a delete, an opaque dir (rm -rf + mkdir), a new dir
SCRIPT = """set -e
echo new > /newfile
echo x >> /etc/passwd
rm /etc/group
rm -rf /home && mkdir /home && echo h > /home/f
mkdir -p /var/spool/x"""
DIFF = ["C /etc", "D /etc/group", "C /etc/passwd", "C /home", "A /home/f", "A /newfile", "C /tmp", "A /tmp/.done",
        "C /var/spool", "A /var/spool/x"]
LAYER = {"etc/", "etc/.wh.group", "etc/passwd", "home/", "home/.wh..wh..opq", "home/f", "newfile", "tmp/",
         "tmp/.done", "var/", "var/spool/", "var/spool/x/"}


def _rm(ketch, *names):
    ketch("rm", "-f", *names, check=False)


def test_diff_after_add_change_delete_and_opaque_dir(ketchd, ketch):
    fresh = ketch("run", "-d", "--name", "fresh", "busybox", "sleep", "1000").stdout.strip()
    run_until(ketch, "d1", SCRIPT)
    try:
        # the mount points the engine made (/etc/hosts, /etc/resolv.conf) are not the container's changes
        assert ketch("diff", "fresh").stdout == ""
        assert ketch("diff", "d1").stdout.splitlines() == DIFF
        status, body = ketchd.json("GET", "/containers/d1/changes")
        assert status == 200
        kinds = {"C": 0, "A": 1, "D": 2}
        assert body == [{"Path": line[2:], "Kind": kinds[line[0]]} for line in DIFF]
        # an opaque dir over lower content: each hidden entry is a deletion
        ketch("commit", "d1", "cow/base:1")
        run_until(ketch, "d2", "rm -rf /var/spool && mkdir /var/spool && echo n > /var/spool/new\nrm /newfile",
                  image="cow/base:1")
        assert ketch("diff", "d2").stdout.splitlines() == [
            "D /newfile", "C /tmp/.done", "C /var", "C /var/spool", "D /var/spool/mail", "A /var/spool/new",
            "D /var/spool/x"]
        r = ketch("diff", "nosuch", check=False)
        assert r.returncode == 1 and "No such container: nosuch" in r.stderr
    finally:
        _rm(ketch, fresh, "d1", "d2")


def test_commit_then_run_layer_is_exactly_the_change(ketchd, ketch):
    cid = run_until(ketch, "c1", SCRIPT)
    try:
        since = time.time()
        iid = ketch("commit", "-a", "Ann <ann@example.com>", "-m", "the change", "c1", "cow/c1:v1").stdout.strip()
        until = time.time() + 0.5
        assert iid.startswith("sha256:") and len(iid) == 71
        members = layer_members(ketchd, "cow/c1:v1")
        assert {m.name + ("/" if m.isdir() else "") for m in members} == LAYER
        wh = {m.name: m for m in members}
        assert wh["etc/.wh.group"].isreg() and wh["etc/.wh.group"].size == 0
        assert wh["home/.wh..wh..opq"].isreg()
        # the image below is shared, not copied: one layer more than busybox, whose layers it reuses
        base = image_config(ketchd, "busybox")
        cfg = image_config(ketchd, "cow/c1:v1")
        assert cfg["rootfs"]["diff_ids"][:-1] == base["rootfs"]["diff_ids"]
        assert len(cfg["rootfs"]["diff_ids"]) == len(base["rootfs"]["diff_ids"]) + 1
        last = cfg["history"][-1]
        assert last["comment"] == "the change" and last["author"] == "Ann <ann@example.com>"
        assert last["created_by"].startswith("sh -c set -e") and "empty_layer" not in last
        assert cfg["author"] == "Ann <ann@example.com>" and cfg["config"]["Cmd"][:2] == ["sh", "-c"]
        r = ketch("run", "--rm", "cow/c1:v1", "sh", "-c", "cat /newfile; tail -n1 /etc/passwd; ls /home; "
                  "test -e /etc/group || echo nogroup; ls -d /var/spool/x")
        assert r.stdout.split() == ["new", "x", "f", "nogroup", "/var/spool/x"]
        # the container is unchanged by its commit, and keeps running
        assert ketch("diff", "c1").stdout.splitlines() == DIFF
        assert ketch("inspect", "-f", "{{.State.Status}}", "c1").stdout.strip() == "running"
        evs = events(ketchd, since, until)
        commit = [e for e in evs if e["Type"] == "container" and e["Action"] == "commit"]
        assert len(commit) == 1 and commit[0]["Actor"]["ID"] == cid
        attrs = commit[0]["Actor"]["Attributes"]
        assert attrs["imageID"] == iid and attrs["imageRef"] == "cow/c1:v1" and attrs["comment"] == "the change"
        assert attrs["name"] == "c1"
        assert [e["Actor"]["ID"] for e in evs if e["Type"] == "image" and e["Action"] == "tag"] == [iid]
        # nothing changed: an image without a new layer, marked empty in its history (as dockerd)
        ketch("run", "--name", "c1same", "cow/c1:v1", "true")
        same = ketch("commit", "c1same").stdout.strip()
        cfg2 = image_config(ketchd, same)
        assert cfg2["rootfs"]["diff_ids"] == cfg["rootfs"]["diff_ids"] and cfg2["history"][-1]["empty_layer"] is True
        # exact: owners, modes, hard links, device nodes, fifos, symlinks, mtimes, xattrs
        run_until(ketch, "c2", "set -e\nmkdir /x\necho data > /x/f\nchown 1000:1001 /x/f\nchmod 4751 /x/f\n"
                  "ln /x/f /x/hard\nmknod /x/null c 1 3\nmkfifo /x/fifo\nln -s ../etc/passwd /x/sym\n"
                  "touch -d '2020-01-02 03:04:05' /x/f")
        merged = os.path.join(ketchd.data_root, "rootfs", ketch("inspect", "-f", "{{.Id}}", "c2").stdout.strip(),
                              "merged")
        os.setxattr(os.path.join(merged, "x", "f"), "user.k", b"v")
        ketch("commit", "c2", "cow/c2")
        m = {x.name: x for x in layer_members(ketchd, "cow/c2")}
        f = m["x/f"]
        assert (f.uid, f.gid, f.mode, f.isreg()) == (1000, 1001, 0o4751, True)
        assert f.pax_headers.get("SCHILY.xattr.user.k") == "v"
        assert m["x/hard"].islnk() and m["x/hard"].linkname == "x/f"
        assert m["x/null"].ischr() and (m["x/null"].devmajor, m["x/null"].devminor) == (1, 3)
        assert m["x/fifo"].isfifo() and m["x/sym"].issym() and m["x/sym"].linkname == "../etc/passwd"
        assert f.mtime == int(time.mktime(time.strptime("2020-01-02 03:04:05", "%Y-%m-%d %H:%M:%S")))
        r = ketch("run", "--rm", "cow/c2", "sh", "-c", "stat -c '%u %g %a %h' /x/f; stat -c %F /x/null; cat /x/hard")
        assert r.stdout.split("\n")[:3] == ["1000 1001 4751 2", "character special file", "data"]
    finally:
        _rm(ketch, "c1", "c1same", "c2")


def test_commit_applies_changes_and_refuses_bad_ones(ketchd, ketch):
    run_until(ketch, "ch", "echo hi > /hello")
    try:
        changes = ['CMD ["cat", "/hello"]', "ENV A=1 B=\"two words\"", "ENV C $A-x", "EXPOSE 80 53/udp",
                   "LABEL k=v \"a b\"=c", "WORKDIR /srv", "WORKDIR app", "USER nobody", "VOLUME /data",
                   "ONBUILD RUN echo child"]
        args = [x for c in changes for x in ("-c", c)]
        ketch("commit", *args, "ch", "cow/changes")
        cfg = image_config(ketchd, "cow/changes")["config"]
        assert cfg["Cmd"] == ["cat", "/hello"]
        assert {"A=1", "B=two words", "C=1-x"} <= set(cfg["Env"]) and any(e.startswith("PATH=") for e in cfg["Env"])
        assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
        assert cfg["Labels"] == {"k": "v", "a b": "c"}
        assert cfg["WorkingDir"] == "/srv/app" and cfg["User"] == "nobody"
        assert cfg["Volumes"] == {"/data": {}} and cfg["OnBuild"] == ["RUN echo child"]
        assert ketch("run", "--rm", "cow/changes").stdout == "hi\n"
        ketch("commit", "-c", 'ENTRYPOINT ["echo", "e"]', "ch", "cow/entry")
        cfg = image_config(ketchd, "cow/entry")["config"]
        assert cfg["Entrypoint"] == ["echo", "e"] and cfg.get("Cmd") is None  # an ENTRYPOINT drops the CMD
        # refused by name, before anything is paused or written
        before = len(ketchd.json("GET", "/images/json?all=1")[1])
        for change, words in (("RUN echo x", "run is not a valid change command"),
                              ("STOPSIGNAL 9", "stopsignal is not a valid change command"),
                              ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD"), ("EXPOSE 99999", "invalid containerPort"),
                              ("ENV", "ENV requires at least one argument")):
            r = ketch("commit", "-c", change, "ch", check=False)
            assert r.returncode == 1 and words in r.stderr, (change, r.stderr)
        for path, code in (("/commit?container=ch&changes=FROM+x", 400), ("/commit?container=nosuch", 404),
                           ("/commit?container=ch&repo=Bad::ref", 400), ("/commit?container=ch&tag=x", 400)):
            status, _, body = ketchd.request("POST", path)
            assert status == code, (path, status, body)
            assert json.loads(body)["message"]
        assert len(ketchd.json("GET", "/images/json?all=1")[1]) == before
        assert ketch("inspect", "-f", "{{.State.Status}}", "ch").stdout.strip() == "running"
        ketch("rm", "-f", "ch")
        r = ketch("commit", "ch", check=False)
        assert r.returncode == 1 and "No such container: ch" in r.stderr
    finally:
        _rm(ketch, "ch")


def _freezer_state(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.strip().split(":", 2) for line in f]
    for _, ctrl, path in lines:
        if ctrl == "freezer":
            with open(f"/sys/fs/cgroup/freezer{path}/freezer.state") as f:
                return f.read().strip()
    for _, ctrl, path in lines:
        if ctrl == "":
            with open(f"/sys/fs/cgroup{path}/cgroup.events") as f:
                return "FROZEN" if "frozen 1" in f.read() else "THAWED"
    raise AssertionError("no freezer cgroup")


@pytest.mark.parametrize("pause", [True, False])
def test_commit_pauses_the_container_by_default(ketchd, ketch, pause):
    name = f"p{int(pause)}"
    # enough files that the commit takes a while, and a counter that runs all the time
    run_until(ketch, name, "mkdir /many; for i in $(seq 3000); do echo $i > /many/$i; done\n"
              "(i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/count; done) &")
    try:
        pid = int(ketch("inspect", "-f", "{{.State.Pid}}", name).stdout)
        seen = set()
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                seen.add(_freezer_state(pid))
                time.sleep(0.002)
        t = threading.Thread(target=watch)
        since = time.time()
        t.start()
        try:
            args = ["-p"] if pause else ["--pause=false"]  # -p takes no value: `-p NAME` is NAME paused
            ketch("commit", *args, name)
        finally:
            stop.set()
            t.join()
        until = time.time() + 0.5
        acts = [e["Action"] for e in events(ketchd, since, until, container=name)]
        if pause:
            assert acts == ["pause", "commit", "unpause"] and "FROZEN" in seen
        else:
            assert acts == ["commit"] and seen == {"THAWED"}
        assert _freezer_state(pid) == "THAWED"
        assert ketch("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "running"
        c1 = ketch("exec", name, "cat", "/tmp/count").stdout
        time.sleep(0.2)
        assert ketch("exec", name, "cat", "/tmp/count").stdout != c1  # counting again
    finally:
        _rm(ketch, name)


def _mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def test_export_is_the_flattened_tree(ketchd, ketch):
    run_until(ketch, "e1", SCRIPT)
    try:
        r = ketch("export", "e1", text=False)
        names = set(tarfile.open(fileobj=io.BytesIO(r.stdout)).getnames())
        assert {"bin/busybox", "newfile", "home/f", "etc/passwd", "proc", "sys", "var/spool/x"} <= names
        assert "etc/group" not in names and not any(".wh." in n for n in names)
        assert not any(n.startswith(("proc/", "sys/")) for n in names)  # the container's mounts are not in it
        # a stopped container's root is mounted for the export only
        ketch("stop", "-t", "0", "e1")
        cid = ketch("inspect", "-f", "{{.Id}}", "e1").stdout.strip()
        assert not [m for m in _mounts_under(ketchd.data_root) if cid in m]
        out = os.path.join(ketchd.base, "e1.tar")
        ketch("export", "-o", out, "e1")
        with tarfile.open(out) as tf:
            assert set(tf.getnames()) == names
            assert tf.extractfile("newfile").read() == b"new\n"
        assert not [m for m in _mounts_under(ketchd.data_root) if cid in m]
        # a reader that goes away mid-stream: the export stops and the root is unmounted
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect(ketchd.socket)
        s.sendall(b"GET /containers/e1/export HTTP/1.1\r\nHost: ketch\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()
        deadline = time.time() + 10
        while [m for m in _mounts_under(ketchd.data_root) if cid in m] and time.time() < deadline:
            time.sleep(0.05)
        assert not [m for m in _mounts_under(ketchd.data_root) if cid in m]
        assert ketch("diff", "e1").stdout.splitlines() == DIFF
        r = ketch("export", "nosuch", check=False)
        assert r.returncode == 1 and "No such container: nosuch" in r.stderr
    finally:
        _rm(ketch, "e1")


def test_docker_cli_diff_commit_export(ketchd, ketch, docker_cli):
    run_until(ketch, "dk", SCRIPT)
    try:
        assert docker_cli("diff", "dk").stdout.splitlines() == DIFF
        iid = docker_cli("commit", "-c", "ENV FROM_DOCKER=1", "-m", "via docker", "dk", "cow/docker:1").stdout.strip()
        assert iid.startswith("sha256:")
        assert {m.name + ("/" if m.isdir() else "") for m in layer_members(ketchd, "cow/docker:1")} == LAYER
        assert "FROM_DOCKER=1" in image_config(ketchd, "cow/docker:1")["config"]["Env"]
        hist = docker_cli("history", "--format", "{{.Comment}}", "cow/docker:1").stdout.split("\n")
        assert hist[0] == "via docker"
        assert docker_cli("run", "--rm", "cow/docker:1", "cat", "/newfile").stdout == "new\n"
        r = docker_cli("commit", "-c", "RUN x", "dk", check=False)
        assert r.returncode != 0 and "run is not a valid change command" in r.stderr
        out = os.path.join(ketchd.base, "dk.tar")
        docker_cli("export", "-o", out, "dk")
        with tarfile.open(out) as tf:
            names = tf.getnames()
        assert "newfile" in names and "etc/group" not in names
        r = docker_cli("commit", "--pause=false", "dk", "cow/docker:2")
        assert r.stdout.strip().startswith("sha256:")
    finally:
        _rm(ketch, "dk")


def test_docker_py_diff_commit_export(ketchd, ketch, dpy):
    run_until(ketch, "py", SCRIPT)
    try:
        c = dpy.containers.get("py")
        kinds = {"C": 0, "A": 1, "D": 2}
        assert c.diff() == [{"Path": line[2:], "Kind": kinds[line[0]]} for line in DIFF]
        img = c.commit(repository="cow/py", tag="1", message="from docker-py", author="py",
                       changes=["CMD [\"cat\", \"/newfile\"]", "LABEL via=py"])
        assert "cow/py:1" in img.tags and img.labels["via"] == "py"
        assert img.history()[0]["Comment"] == "from docker-py"
        assert dpy.containers.run("cow/py:1", remove=True) == b"new\n"
        # a config in the body (docker-py's conf): the run config of the image, merged with the container's
        img2 = c.commit(repository="cow/py", tag="conf", conf={"Cmd": ["echo", "conf"], "Env": ["X=1"]})
        cfg = image_config(ketchd, img2.id)["config"]
        assert cfg["Cmd"] == ["echo", "conf"] and "X=1" in cfg["Env"] and any(e.startswith("PATH=") for e in cfg["Env"])
        assert dpy.containers.run("cow/py:conf", remove=True) == b"conf\n"
        data = b"".join(c.export())
        names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
        assert "newfile" in names and "home/f" in names and "etc/group" not in names
        import docker
        with pytest.raises(docker.errors.APIError) as e:
            c.commit(changes=["FROM busybox"])
        assert e.value.status_code == 400 and "from is not a valid change command" in str(e.value)
    finally:
        _rm(ketch, "py")


def test_diff_and_commit_of_a_container_whose_root_is_gone(ketchd, ketch):
    from ketch.images import ImageService
    cid = ketch("create", "--name", "gone", "busybox", "true").stdout.strip()
    try:
        ImageService(ketchd.data_root).snapshots.remove(cid)  # the writable layer lost (a damaged data root)
        for args in (("diff", "gone"), ("commit", "gone", "cow/gone")):
            r = ketch(*args, check=False)
            assert r.returncode == 1 and "its root filesystem is gone" in r.stderr, r.stderr
        status, _, _ = ketchd.request("GET", f"/containers/{cid}/changes")
        assert status == 409
        assert ketch("images", "-q", "cow/gone").stdout == ""
    finally:
        _rm(ketch, "gone")


def test_a_failed_commit_still_unpauses(ketchd, ketch):
    from ketch.images import ImageService
    run_until(ketch, "v0", "echo v > /victim")
    ketch("commit", "v0", "cow/victim")
    run_until(ketch, "v1", "echo more > /more", image="cow/victim")
    try:
        svc = ImageService(ketchd.data_root)
        iid = svc.resolve("cow/victim")[0]
        with svc.meta.write() as doc:  # the image's record lost under the container (a damaged store)
            del doc["images"][iid]
            del doc["tags"]["docker.io/cow/victim:latest"]
        since = time.time()
        r = ketch("commit", "v1", "cow/never", check=False)
        until = time.time() + 0.5
        assert r.returncode == 1 and "no longer stored" in r.stderr, r.stderr
        assert [e["Action"] for e in events(ketchd, since, until, container="v1")] == ["pause", "unpause"]
        assert ketch("inspect", "-f", "{{.State.Status}}", "v1").stdout.strip() == "running"
        assert _freezer_state(int(ketch("inspect", "-f", "{{.State.Pid}}", "v1").stdout)) == "THAWED"
        assert ketch("images", "-q", "cow/never").stdout == ""
    finally:
        _rm(ketch, "v0", "v1")
