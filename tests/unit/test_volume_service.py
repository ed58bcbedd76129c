"""The volume service without a daemon: records on disk, users derived at load, Docker's filters,
refusals and prune, the local driver's option checks, and copy-up on plain directories."""

import json
import os
import stat

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.events import EventBus
from ketch.volumes import ANONYMOUS_LABEL, VolumeService
from ketch.volumes.copyup import copy_up


def test_a_volume_is_its_record_and_a_half_made_one_is_cleaned_at_load(tmp_path):
    bus = EventBus()
    svc = VolumeService(str(tmp_path), bus)
    v = svc.create("data", labels={"a": "1"})
    assert v == {"CreatedAt": v["CreatedAt"], "Driver": "local", "Labels": {"a": "1"},
                 "Mountpoint": str(tmp_path / "data" / "_data"), "Name": "data", "Options": None, "Scope": "local"}
    with open(tmp_path / "data" / "volume.json") as f:
        assert json.load(f)["Name"] == "data"
    assert svc.create("data") == v                       # an existing name answers the volume
    (tmp_path / "half" / "_data").mkdir(parents=True)    # a create killed before its record
    again = VolumeService(str(tmp_path))
    assert [x["Name"] for x in again.list()[0]] == ["data"] and not (tmp_path / "half").exists()
    assert [e["Action"] for e in bus.history] == ["create"]


def test_users_are_derived_refused_removal_and_released(tmp_path):
    svc = VolumeService(str(tmp_path))
    svc.create("shared")
    svc.create("idle")
    svc.restore({"c1": ["shared"], "c2": ["shared", "gone"]}, running={"c1"})
    with pytest.raises(Conflict, match=r"^remove shared: volume is in use - \[c1, c2\]$"):
        svc.remove("shared", force=True)
    assert [v["Name"] for v in svc.list({"dangling": ["true"]})[0]] == ["idle"]
    assert [v["Name"] for v in svc.list({"dangling": ["0"]})[0]] == ["shared"]
    svc.release("shared", "c1")
    svc.release("shared", "c2")
    svc.remove("shared")
    assert not (tmp_path / "shared").exists()
    with pytest.raises(NotFound, match="^get shared: no such volume$"):
        svc.inspect("shared")
    svc.remove("shared", force=True)                      # force: a missing one is no error


def test_filters_and_prune(tmp_path):
    svc = VolumeService(str(tmp_path))
    svc.create("web-data", labels={"tier": "web"})
    svc.create("db-data", labels={"tier": "db", "keep": ""})
    anon = svc.anonymous()
    assert anon.labels == {ANONYMOUS_LABEL: ""} and len(anon.name) == 64
    names = lambda f: [v["Name"] for v in svc.list(f)[0]]  # noqa: E731
    assert names({"name": ["^web"]}) == ["web-data"] and names({"label": ["tier=db"]}) == ["db-data"]
    assert names({"label": ["keep"], "driver": ["local"]}) == ["db-data"] and names({"driver": ["nfs"]}) == []
    for bad in ({"bogus": ["1"]}, {"dangling": ["maybe"]}):
        with pytest.raises(InvalidArgument):
            svc.list(bad)
    with open(os.path.join(svc.get("web-data").path, "f"), "wb") as f:
        f.write(b"x" * 100)
    assert svc.prune() == {"VolumesDeleted": [anon.name], "SpaceReclaimed": 0}
    assert svc.prune({"all": ["true"], "label!": ["keep"]}) == {"VolumesDeleted": ["web-data"], "SpaceReclaimed": 100}
    with pytest.raises(InvalidArgument, match="invalid filter 'until'"):
        svc.prune({"until": ["1h"]})
    assert [u["UsageData"] for u in svc.usage()] == [{"Size": 0, "RefCount": 0}]


@pytest.mark.parametrize("name,kw,words", [
    ("x", {}, "create x: volume name is too short"),
    ("a/b", {}, "create a/b: \"a/b\" includes invalid characters for a local volume name"),
    ("v", {"driver": "nfs"}, None),
    ("vv", {"options": {"foo": "1"}}, 'create vv: invalid option: "foo"'),
    ("vv", {"options": {"type": "tmpfs"}}, 'create vv: missing required option: "device"'),
    ("vv", {"options": {"o": "size=1m", "device": "tmpfs"}}, 'create vv: missing required option: "type"'),
    ("vv", {"options": {"size": "1g"}}, "create vv: quota size requested but no quota support"),
    ("vv", {"options": {"type": "none", "device": "rel", "o": "bind"}}, "o=bind needs an absolute device path"),
    ("vv", {"labels": {"a": 1}}, "CreateOptions.Labels"),
])
def test_creates_are_refused_in_dockers_words(tmp_path, name, kw, words):
    svc = VolumeService(str(tmp_path))
    if words is None:
        with pytest.raises(NotFound, match='plugin "nfs" not found'):
            svc.create(name, **kw)
    else:
        with pytest.raises(InvalidArgument) as e:
            svc.create(name, **kw)
        assert words in str(e.value)
    assert svc.list()[0] == [] and os.listdir(tmp_path) == []


def test_a_tmpfs_volume_may_have_a_size(tmp_path):
    svc = VolumeService(str(tmp_path))
    v = svc.create("tv", options={"type": "tmpfs", "device": "tmpfs", "size": "64m"})
    assert v["Options"] == {"type": "tmpfs", "device": "tmpfs", "size": "64m"}


def test_copy_up_keeps_metadata_resolves_inside_the_root_and_leaves_full_volumes_alone(tmp_path):
    root = tmp_path / "root"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "f").write_text("img\n")
    os.chmod(root / "data" / "f", 0o640)
    os.chmod(root / "data", 0o750)
    os.link(root / "data" / "f", root / "data" / "hard")
    os.symlink("f", root / "data" / "link")
    os.symlink("/data", root / "alias")                      # resolved in the root, not the host's /data
    os.utime(root / "data" / "f", (1_600_000_000, 1_600_000_000))
    dst = tmp_path / "vol"
    dst.mkdir()
    assert copy_up(str(root), "/alias", str(dst)) == 4
    assert sorted(os.listdir(dst)) == ["f", "hard", "link", "sub"]
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o750 and stat.S_IMODE(os.stat(dst / "f").st_mode) == 0o640
    assert os.stat(dst / "f").st_ino == os.stat(dst / "hard").st_ino and os.readlink(dst / "link") == "f"
    assert os.stat(dst / "f").st_mtime == 1_600_000_000
    (dst / "f").write_text("changed\n")
    assert copy_up(str(root), "/data", str(dst)) == 0 and (dst / "f").read_text() == "changed\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert copy_up(str(root), "/nothing/there", str(empty)) == 0 and os.listdir(empty) == []
