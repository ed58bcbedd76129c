"""Named and anonymous volumes end to end through `ketch` and the API, against a private ketchd
(real image service, the busybox base image and one imported image with a VOLUME whose content
has owners, modes, a setuid bit, an xattr, a hard link and a symlink): data that outlives its
container, sharing, copy-up, read-only, --volumes-from, anonymous volumes going with rm -v and
--rm, refusals, prune, users that survive a ketchd restart, Docker's API shapes and events."""

import io
import json
import os
import subprocess
import tarfile
import time
import urllib.parse

import pytest

from tests.cli.test_containers import K, _make_base
from tests.engine.daemon import daemon_fixture, wait_for

IMAGE = "ketchtest/vol:latest"


ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


def _volume_image_tar() -> bytes:
    """A busybox image whose /data has what copy-up must keep (imported with VOLUME /data)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name, kind=tarfile.DIRTYPE, mode=0o755, uid=0, gid=0, data=b"", link="", pax=None):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, gid, 1_700_000_000
            ti.linkname = link
            if pax:
                ti.pax_headers = pax
            if kind == tarfile.REGTYPE:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
        for dname in ("bin", "etc", "tmp", "proc", "sys", "dev"):
            add(dname)
        with open("/bin/busybox", "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, 0o755, data=f.read())
        for applet in ("sh", "cat", "ls", "stat", "echo", "sleep", "touch", "mount", "grep", "readlink", "id",
                       "mkdir", "rm", "test", "true"):
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, data=b"root:x:0:0:root:/root:/bin/sh\n")
        add("data", mode=0o750, uid=1000, gid=2000)
        add("data/file", tarfile.REGTYPE, 0o640, 1001, 1001, b"from-image\n", pax={"SCHILY.xattr.user.k": "v"})
        add("data/hard", tarfile.LNKTYPE, 0o640, 1001, 1001, link="data/file")
        add("data/suid", tarfile.REGTYPE, 0o4755, 0, 0, b"#!/bin/sh\n")
        add("data/link", tarfile.SYMTYPE, 0o777, link="file")
        add("data/sub", mode=0o700, uid=7, gid=7)
        add("data/sub/deep", tarfile.REGTYPE, 0o600, 7, 7, b"deep\n")
    return buf.getvalue()


@pytest.fixture(scope="module")
def k(ketchd, tmp_path_factory):
    kk = K(ketchd)
    tar = tmp_path_factory.mktemp("img") / "vol.tar"
    tar.write_bytes(_volume_image_tar())
    kk("import", "-c", "VOLUME /data", "-c", 'CMD ["sh"]', str(tar), IMAGE)
    return kk


def api(ketchd, method, path, body=None, expect=None):
    return ketchd.json(method, path, body, expect)


def inspect_volume(k, name):
    return json.loads(k("volume", "inspect", name).stdout)[0]


def names(k, *flags):
    return k("volume", "ls", "-q", *flags).stdout.split()


@pytest.fixture
def clean(k):
    """Containers and volumes a test makes go afterwards."""
    yield
    for cid in k("ps", "-aq").stdout.split():
        k("rm", "-f", cid, check=False)
    k("volume", "prune", "-af", check=False)


# ------------------------------------------------------------------------------ data

def test_data_in_a_named_volume_survives_its_container_and_is_seen_by_the_next(k, clean):
    assert k("volume", "create", "--label", "team=a", "keep").stdout == "keep\n"
    k("run", "--rm", "-v", "keep:/d", "busybox", "sh", "-c", "echo kept > /d/f")
    assert "keep" in names(k)
    assert k("run", "--rm", "-v", "keep:/d:ro", "busybox", "cat", "/d/f").stdout == "kept\n"
    v = inspect_volume(k, "keep")
    assert (v["Driver"], v["Labels"], v["Scope"], v["Name"]) == ("local", {"team": "a"}, "local", "keep")
    with open(os.path.join(v["Mountpoint"], "f")) as f:
        assert f.read() == "kept\n"
    # -v NAME makes a volume on first use
    k("run", "--rm", "-v", "madeonuse:/m", "busybox", "true")
    assert "madeonuse" in names(k)
    # docker cp reaches into the volume, not the writable layer under it
    c = k("create", "-v", "keep:/d", "busybox", "true").stdout.strip()
    with tarfile.open(fileobj=io.BytesIO(subprocess.run(k.argv("cp", f"{c}:/d/f", "-"), capture_output=True,
                                                        env=k.env, check=True).stdout)) as t:
        assert t.extractfile("f").read() == b"kept\n"
    src = os.path.join(k.d.base, "to-volume")
    with open(src, "w") as f:
        f.write("in\n")
    k("cp", src, f"{c}:/d/")
    with open(os.path.join(v["Mountpoint"], "to-volume")) as f:
        assert f.read() == "in\n"
    k("rm", c)


def test_an_anonymous_mount_with_driver_options(k, clean):
    r = k("run", "--rm", "--mount", "type=volume,target=/t,volume-opt=type=tmpfs,volume-opt=device=tmpfs,"
          "volume-opt=o=size=1m", "busybox", "grep", " /t ", "/proc/mounts")
    assert r.stdout.split()[2] == "tmpfs" and "size=1024k" in r.stdout
    r = k("run", "--rm", "--mount", "type=volume,target=/t,volume-opt=bogus=1", "busybox", "true", check=False)
    assert r.returncode == 125 and 'invalid option: "bogus"' in r.stderr


def test_two_containers_share_a_volume_at_once(k, clean):
    a = k("run", "-d", "-v", "both:/s", "busybox", "sh", "-c",
          "while [ ! -f /s/ping ]; do sleep 0.05; done; echo pong > /s/pong; sleep 60").stdout.strip()
    r = k("run", "--rm", "-v", "both:/s", "busybox", "sh", "-c",
          "echo > /s/ping; i=0; while [ ! -f /s/pong ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; cat /s/pong")
    assert r.stdout == "pong\n"
    assert names(k, "-f", "dangling=false") == ["both"]
    r = k("volume", "rm", "both", check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == f"Error response from daemon: remove both: volume is in use - [{a}]"
    r = k("volume", "rm", "-f", "both", check=False)   # force does not take a volume from its users
    assert r.returncode == 1 and "volume is in use" in r.stderr
    k("rm", "-f", a)
    assert names(k, "-f", "dangling=true") == ["both"]
    assert k("volume", "rm", "both").stdout == "both\n"


# ------------------------------------------------------------------------------ copy-up

STAT = "stat -c '%n %u:%g %a' /data /data/file /data/suid /data/sub /data/sub/deep; readlink /data/link; cat /data/hard"


def test_copy_up_fills_a_fresh_volume_from_the_image_with_owners_modes_and_xattrs(k, clean):
    r = k("run", "--rm", "-v", "cu:/data", IMAGE, "sh", "-c", STAT)
    assert r.stdout.splitlines() == ["/data 1000:2000 750", "/data/file 1001:1001 640", "/data/suid 0:0 4755",
                                     "/data/sub 7:7 700", "/data/sub/deep 7:7 600", "file", "from-image"]
    root = inspect_volume(k, "cu")["Mountpoint"]
    assert os.getxattr(os.path.join(root, "file"), "user.k") == b"v"
    assert os.stat(os.path.join(root, "file")).st_ino == os.stat(os.path.join(root, "hard")).st_ino
    assert os.stat(os.path.join(root, "file")).st_mtime == 1_700_000_000
    # a volume with content is not filled again: what a container changed stays
    k("run", "--rm", "-v", "cu:/data", IMAGE, "sh", "-c", "rm /data/file /data/hard; echo mine > /data/new")
    assert k("run", "--rm", "-v", "cu:/data", IMAGE, "ls", "/data").stdout.split() == ["link", "new", "sub", "suid"]
    # nocopy, in both spellings, leaves it empty
    assert k("run", "--rm", "-v", "nc1:/data:nocopy", IMAGE, "ls", "-A", "/data").stdout == ""
    assert k("run", "--rm", "--mount", "type=volume,source=nc2,target=/data,volume-nocopy", IMAGE,
             "ls", "-A", "/data").stdout == ""


def test_a_copy_up_that_does_not_fit_fails_clearly_and_leaves_the_volume_empty(k, clean):
    k("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=16k", "small")
    holder = k("run", "-d", "-v", "small:/x:nocopy", "busybox", "sleep", "60").stdout.strip()
    r = k("run", "--rm", "-v", "small:/bin", "busybox", "true", check=False)
    assert r.returncode != 0
    assert "copy-up of the image's /bin into volume small: no space left on device (" in r.stderr, r.stderr
    assert " bytes needed)" in r.stderr
    assert k("exec", holder, "ls", "-A", "/x").stdout == ""   # nothing half-copied is left
    k("rm", "-f", holder)


def test_the_images_volume_is_an_anonymous_volume_filled_from_the_image(k, clean):
    cid = k("run", "-d", IMAGE, "sleep", "60").stdout.strip()
    mounts = json.loads(k("inspect", cid).stdout)[0]["Mounts"]
    assert len(mounts) == 1
    m = mounts[0]
    assert (m["Type"], m["Destination"], m["Driver"], m["RW"], m["Propagation"]) == ("volume", "/data", "local",
                                                                                        True, "")
    assert len(m["Name"]) == 64 and m["Source"] == inspect_volume(k, m["Name"])["Mountpoint"]
    assert inspect_volume(k, m["Name"])["Labels"] == {"com.docker.volume.anonymous": ""}
    with open(os.path.join(m["Source"], "file")) as f:
        assert f.read() == "from-image\n"
    assert k("ps", "-q", "--filter", f"volume={m['Name']}").stdout.strip() == cid[:12]
    k("rm", "-f", "-v", cid)
    assert m["Name"] not in names(k)


# ------------------------------------------------------------------------------ modes

def test_a_read_only_volume_refuses_writes_and_read_only_roots_keep_writable_volumes(k, clean):
    r = k("run", "--rm", "-v", "rov:/d:ro", "busybox", "sh", "-c", "touch /d/x 2>&1 || echo refused")
    assert r.stdout.strip().endswith("refused") and "Read-only file system" in r.stdout
    r = k("run", "--rm", "--mount", "type=volume,src=rov,dst=/d,readonly", "busybox", "sh", "-c",
          "touch /d/x 2>/dev/null || echo refused")
    assert r.stdout == "refused\n"
    r = k("run", "--rm", "--read-only", "-v", "rwv:/d", "--tmpfs", "/scratch:size=1m", "busybox", "sh", "-c",
          "echo a > /d/a && echo b > /scratch/b && cat /d/a /scratch/b; touch /rootfile 2>/dev/null || echo root-ro")
    assert r.stdout.split() == ["a", "b", "root-ro"]


def test_volumes_from_takes_the_other_containers_volumes_and_binds(k, clean, tmp_path):
    (tmp_path / "hostfile").write_text("host\n")
    src = k("create", "--name", "vsrc", "-v", "vfrom:/data", "-v", f"{tmp_path}:/h", "--tmpfs", "/t", "busybox",
            "true").stdout.strip()
    k("run", "--rm", "-v", "vfrom:/data", "busybox", "sh", "-c", "echo shared > /data/x")
    r = k("run", "--rm", "--volumes-from", "vsrc", "busybox", "sh", "-c",
          "cat /data/x /h/hostfile; echo more >> /data/x; grep -c ' /t ' /proc/mounts || true")
    assert r.stdout.split() == ["shared", "host", "0"]   # tmpfs mounts are the other's own
    r = k("run", "--rm", "--volumes-from", f"{src[:12]}:ro", "busybox", "sh", "-c",
          "cat /data/x; touch /data/y 2>/dev/null || echo ro")
    assert r.stdout.split() == ["shared", "more", "ro"]
    other = k("create", "--volumes-from", "vsrc", "busybox", "true").stdout.strip()
    mounts = {m["Destination"]: m for m in json.loads(k("inspect", other).stdout)[0]["Mounts"]}
    assert mounts["/data"]["Name"] == "vfrom" and mounts["/h"]["Source"] == str(tmp_path) and "/t" not in mounts
    r = k("run", "--rm", "--volumes-from", "nosuch", "busybox", "true", check=False)
    assert r.returncode == 125 and "No such container: nosuch" in r.stderr


# ------------------------------------------------------------------------------ anonymous volumes

def test_anonymous_volumes_go_with_rm_v_and_with_rm(k, clean):
    before = set(names(k))
    k("run", "--rm", "-v", "/anon", "busybox", "sh", "-c", "echo x > /anon/x")
    assert set(names(k)) == before                            # --rm took it
    cid = k("create", "-v", "/anon", "-v", "named1:/named", "busybox", "true").stdout.strip()
    anon = [m["Name"] for m in json.loads(k("inspect", cid).stdout)[0]["Mounts"] if m["Destination"] == "/anon"][0]
    assert set(names(k)) == before | {anon, "named1"}
    k("rm", cid)                                              # without -v it stays, dangling
    assert anon in names(k, "-f", "dangling=true")
    cid = k("create", "-v", "/anon", "busybox", "true").stdout.strip()
    anon2 = json.loads(k("inspect", cid).stdout)[0]["Mounts"][0]["Name"]
    k("rm", "-v", cid)                                        # -v takes the anonymous one, never a named one
    assert anon2 not in names(k) and "named1" in names(k)
    # an --rm container that fails to start takes its anonymous volume too
    r = k("run", "--rm", "-v", "/anon", "busybox", "/nonexistent", check=False)
    assert r.returncode == 127
    assert wait_for(lambda: anon2 not in names(k) and set(names(k)) == before | {anon, "named1"}, timeout=10)


# ------------------------------------------------------------------------------ prune

def test_prune_takes_unused_anonymous_volumes_and_with_all_the_named_ones_too(k, clean):
    k("volume", "create", "pn-named")
    k("volume", "create", "--label", "keep=yes", "pn-kept")
    cid = k("create", "-v", "/anon", "busybox", "true").stdout.strip()
    anon = json.loads(k("inspect", cid).stdout)[0]["Mounts"][0]["Name"]
    k("volume", "create", "pn-used")
    user = k("create", "-v", "pn-used:/u", "busybox", "true").stdout.strip()
    k("run", "--rm", "-v", "pn-named:/d", "busybox", "sh", "-c", "head -c 1000 /dev/zero > /d/z")
    k("rm", cid)
    r = k("volume", "prune", "-f")
    assert r.stdout == f"Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 0B\n"
    assert set(names(k)) >= {"pn-named", "pn-kept", "pn-used"}
    r = k("volume", "prune", "-a", "-f", "--filter", "label!=keep=yes")
    assert r.stdout == "Deleted Volumes:\npn-named\n\nTotal reclaimed space: 1kB\n"
    assert set(names(k)) == {"pn-kept", "pn-used"}
    r = k("volume", "prune", "-f", "-a", input="")
    assert "pn-kept" in r.stdout and set(names(k)) == {"pn-used"}
    r = k("volume", "prune", "-a", input="n\n")   # asks first, does nothing unless y
    assert r.stdout.startswith("WARNING! This will remove all local volumes not used by at least one container.")
    k("rm", user)
    assert k("volume", "rm", "pn-used").stdout == "pn-used\n"


# ------------------------------------------------------------------------------ restart

def test_users_of_a_volume_are_known_again_after_a_ketchd_restart(k, ketchd, clean):
    k("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=2m", "rs-tmp")
    live = k("run", "-d", "-v", "rs-tmp:/t", "-v", "rs-keep:/k", "busybox", "sh", "-c",
             "echo in-tmpfs > /t/f; grep ' /t ' /proc/mounts; sleep 300").stdout.strip()
    stopped = k("create", "-v", "rs-idle:/i", "busybox", "true").stdout.strip()
    mp = inspect_volume(k, "rs-tmp")["Mountpoint"]
    assert wait_for(lambda: "size=2048k" in k("logs", live).stdout)
    ketchd.stop()
    ketchd.start()
    r = k("volume", "rm", "rs-keep", "rs-idle", check=False)
    assert r.returncode == 1
    assert f"remove rs-keep: volume is in use - [{live}]" in r.stderr
    assert f"remove rs-idle: volume is in use - [{stopped}]" in r.stderr
    assert not {"rs-tmp", "rs-keep", "rs-idle"} & set(names(k, "-f", "dangling=true"))
    assert k("exec", live, "cat", "/t/f").stdout == "in-tmpfs\n"
    k("stop", "-t", "0", live)
    # the last user stopped: the tmpfs is unmounted on the host
    assert wait_for(lambda: not any(line.split()[4] == mp for line in open("/proc/self/mountinfo")))
    k("rm", live, stopped)
    assert k("volume", "rm", "rs-keep", "rs-idle", "rs-tmp").stdout.split() == ["rs-keep", "rs-idle", "rs-tmp"]


# ------------------------------------------------------------------------------ the API

def test_api_shapes_refusals_and_events(ketchd, k, clean):
    since = int(time.time()) - 1
    status, v = api(ketchd, "POST", "/volumes/create", {"Name": "apivol", "Labels": {"a": "1"},
                                                         "DriverOpts": {}})
    assert status == 201 and set(v) == {"CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"}
    status, same = api(ketchd, "POST", "/volumes/create", {"Name": "apivol"})   # existing: answered again
    assert status == 201 and same == v
    status, listed = api(ketchd, "GET", "/volumes?filters=" + urllib.parse.quote('{"label":["a=1"]}'))
    assert status == 200 and listed == {"Volumes": [v], "Warnings": None}
    q = urllib.parse.quote('{"name":["^api"],"driver":["local"]}')
    status, listed = api(ketchd, "GET", "/volumes?filters=" + q)
    assert [x["Name"] for x in listed["Volumes"]] == ["apivol"]
    for body, code, words in [
        ({"Name": "bad", "DriverOpts": {"foo": "bar"}}, 400, 'create bad: invalid option: "foo"'),
        ({"Name": "bad", "DriverOpts": {"type": "tmpfs"}}, 400, 'create bad: missing required option: "device"'),
        ({"Name": "bad", "DriverOpts": {"size": "10m"}}, 400, "create bad: quota size requested but no quota support"),
        ({"Name": "bad", "Driver": "nfs-plugin"}, 404, 'error looking up volume plugin nfs-plugin'),
        ({"Name": "x"}, 400, "volume name is too short"),
        ({"Name": "a/b"}, 400, "includes invalid characters for a local volume name"),
    ]:
        status, err = api(ketchd, "POST", "/volumes/create", body)
        assert status == code and words in err["message"], (body, status, err)
    status, err = api(ketchd, "GET", "/volumes/nosuch")
    assert status == 404 and err == {"message": "get nosuch: no such volume"}
    assert api(ketchd, "DELETE", "/volumes/nosuch")[0] == 404
    assert api(ketchd, "DELETE", "/volumes/nosuch?force=1")[0] == 204
    assert api(ketchd, "GET", "/volumes?filters=" + urllib.parse.quote('{"bogus":["1"]}'))[0] == 400
    assert api(ketchd, "POST", "/volumes/prune?filters=" + urllib.parse.quote('{"until":["1h"]}'))[0] == 400
    r = k("run", "--rm", "-v", "apivol:/d", "busybox", "true")
    assert r.returncode == 0
    # before API 1.42 a prune took named volumes too (as dockerd)
    status, pruned = api(ketchd, "POST", "/v1.41/volumes/prune")
    assert status == 200 and pruned["VolumesDeleted"] == ["apivol"] and pruned["SpaceReclaimed"] == 0
    status, raw, body = ketchd.request("GET", f"/events?since={since}&until={int(time.time()) + 1}"
                                       "&filters=" + urllib.parse.quote('{"type":["volume"],"volume":["apivol"]}'))
    events = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    assert [e["Action"] for e in events] == ["create", "mount", "unmount", "destroy"]
    mount = events[1]["Actor"]["Attributes"]
    assert mount["destination"] == "/d" and mount["read/write"] == "true" and mount["driver"] == "local"


def test_system_df_counts_volumes_in_bytes(k, ketchd, clean):
    k("run", "--rm", "-v", "dfv:/d", "busybox", "sh", "-c", "head -c 12345 /dev/zero > /d/z")
    holder = k("create", "-v", "dfv:/d", "busybox", "true").stdout.strip()
    status, df = api(ketchd, "GET", "/system/df")
    vol = [v for v in df["Volumes"] if v["Name"] == "dfv"][0]
    assert vol["UsageData"] == {"Size": 12345, "RefCount": 1}
    k("rm", holder)
