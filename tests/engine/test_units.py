"""Pure pieces of the engine: log format conversion and rotation, detach keys, spec defaults, paths."""

import os

import pytest

from ketch.api.streams import DetachMatcher, frame, parse_detach_keys
from ketch.engine import logs, spec
from ketch.engine.rootpath import resolve
from ketch.errors import InvalidArgument


def test_k8s_lines_become_docker_entries(tmp_path):
    p = tmp_path / "ctr.log"
    p.write_bytes(b"2026-01-02T03:04:05.123456789+01:00 stdout F hello\n"
                  b"2026-01-02T03:04:05.200000000+00:00 stderr P part-\n"
                  b"2026-01-02T03:04:06.000000000+00:00 stdout F other\n"
                  b"2026-01-02T03:04:06.500000000+00:00 stderr F end\n"
                  b"2026-01-02T03:04:07.000000000+00:00 stdout P tail-without-newline\n")
    entries = logs.read_entries(str(p))
    assert [(e.stream, e.data) for e in entries] == [
        ("stdout", b"hello\n"), ("stdout", b"other\n"), ("stderr", b"part-end\n"),
        ("stdout", b"tail-without-newline")]
    assert entries[0].time == "2026-01-02T02:04:05.123456789Z"
    assert entries[2].time == "2026-01-02T03:04:05.2Z"
    assert entries[0].ns == 1767319445123456789
    # since/until are exact to the nanosecond (a client resuming from a timestamp loses nothing)
    assert logs.parse_time("1767319445.123456789") == entries[0].ns
    assert logs.parse_time("2026-01-02T02:04:05.123456789Z") == entries[0].ns
    assert logs.parse_time("2026-01-02T03:04:05+01:00") == 1767319445 * 10**9
    with pytest.raises(InvalidArgument):
        logs.parse_time("yesterday")


def test_rotation_keeps_max_file(tmp_path):
    p = str(tmp_path / "c.log")
    for i in range(5):
        with open(p, "w") as f:
            f.write(f"2026-01-01T00:00:0{i}.000000000+00:00 stdout F gen{i}\n" * 10)
        assert logs.rotate_if_needed(p, 100, 3)
    assert sorted(os.listdir(tmp_path)) == ["c.log.1", "c.log.2"]
    assert [e.data for e in logs.read_entries(p)][0] == b"gen3\n"
    assert logs.parse_size("10k") == 10240 and logs.parse_size("1m") == 1 << 20
    with pytest.raises(InvalidArgument):
        logs.parse_size("ten")


def test_detach_keys_and_frames():
    assert parse_detach_keys(None) == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x") == b"\x01x"
    with pytest.raises(ValueError):
        parse_detach_keys("ctrl-ab")
    m = DetachMatcher(b"\x10\x11")
    assert m.feed(b"abc\x10") == (b"abc", False)
    assert m.feed(b"\x11rest") == (b"", True)
    m = DetachMatcher(b"\x10\x11")
    assert m.feed(b"a\x10") == (b"a", False)
    assert m.feed(b"b") == (b"\x10b", False)
    assert frame(2, b"xy") == b"\x02\x00\x00\x00\x00\x00\x00\x02xy"


def test_in_root_resolution_never_leaves_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/", root / "up")
    os.symlink("../../../..", root / "etc" / "rel")
    os.symlink("/etc", root / "abs")
    assert resolve(str(root), "/up/etc/passwd") == str(root / "etc" / "passwd")
    assert resolve(str(root), "/etc/rel/x") == str(root / "x")
    assert resolve(str(root), "/abs/../..") == str(root)
    assert resolve(str(root), "/abs", follow_final=False) == str(root / "abs")


def test_spec_defaults_and_options(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nextra:x:2000:app\n")
    s = spec.build_spec(cid="a" * 64, config={"Cmd": ["sh"], "Env": ["A=1"], "User": "app", "Tty": True},
                        host_config={"NetworkMode": "none", "Memory": 1 << 26, "NanoCpus": 1_500_000_000,
                                     "PidsLimit": 10, "Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}],
                                     "CapDrop": ["NET_RAW"], "Init": True, "ReadonlyRootfs": True},
                        rootfs=str(root), etc_dir=str(tmp_path),
                        cgroup_parent="/ketch", init_binary="/usr/bin/tini-static")
    p = s["process"]
    assert p["args"] == ["/sbin/docker-init", "--", "sh"] and p["user"] == {"uid": 1000, "gid": 1000,
                                                                          "additionalGids": [2000]}
    assert "TERM=xterm" in p["env"] and "HOME=/home/app" in p["env"] and p["env"][0].startswith("PATH=")
    assert "CAP_NET_RAW" not in p["capabilities"]["bounding"] and "CAP_CHOWN" in p["capabilities"]["effective"]
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]
    lx = s["linux"]
    assert {"type": "network"} in lx["namespaces"] and lx["cgroupsPath"] == "/ketch/" + "a" * 64
    assert lx["resources"]["memory"]["limit"] == 1 << 26 and lx["resources"]["cpu"]["quota"] == 150000
    assert lx["resources"]["pids"] == {"limit": 10}
    assert "/proc/kcore" in lx["maskedPaths"] and "/proc/sys" in lx["readonlyPaths"]
    assert lx["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert s["root"]["readonly"] is True
    assert any(m["destination"] == "/sbin/docker-init" for m in s["mounts"])
    with pytest.raises(InvalidArgument):
        spec.resolve_user(str(root), "nobody-here")
    host = spec.build_spec(cid="b" * 64, config={"Cmd": ["true"]}, host_config={"NetworkMode": "host"},
                           rootfs=str(root), etc_dir=str(tmp_path), cgroup_parent="/k",
                           init_binary=None)
    assert {"type": "network"} not in host["linux"]["namespaces"]
