"""What `ketch` and the real docker CLI print against ketchd, as docker prints it: logs --details,
the top event, system df -v, info's sizes and runtime, ps's durations, the ancestor filter.
Containers run with --network none: nothing here is about networking."""

import io
import json
import os
import re
import tarfile
import time

import pytest

from ketch.units import bytes_size
from tests import helpers
from tests.cli.test_containers import K, _make_base
from tests.engine.daemon import DOCKER, daemon_fixture, wait_for

ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


@pytest.fixture(scope="module")
def k(ketchd):
    return K(ketchd)


def _columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_logs_details_show_the_log_attributes(k, ketchd):
    k("run", "--network", "none", "--name", "det", "-l", "tier=front", "-l", "team=a b", "-l", "other=x",
      "-e", "FOO=bar", "-e", "SKIP=1", "--log-opt", "labels=tier,team", "--log-opt", "env=FOO",
      "busybox", "sh", "-c", "echo hi")
    # sorted by key, query-escaped, comma-joined, then a space (dockerd's attrsByteSlice)
    assert k("logs", "--details", "det").stdout == "FOO=bar,team=a+b,tier=front hi\n"
    assert k("logs", "det").stdout == "hi\n"
    ts, rest = k("logs", "--details", "-t", "det").stdout.split(" ", 1)
    assert ts.endswith("Z") and rest == "FOO=bar,team=a+b,tier=front hi\n"
    status, _, body = ketchd.request("GET", "/containers/det/logs?stdout=1&details=1")
    assert status == 200 and body[8:] == b"FOO=bar,team=a+b,tier=front hi\n"  # one stdcopy frame
    if DOCKER:
        assert ketchd.docker("logs", "--details", "det").stdout == "FOO=bar,team=a+b,tier=front hi\n"
    # no attributes: a lone space; the regex opts pick by pattern
    k("run", "--network", "none", "--name", "det2", "busybox", "echo", "plain")
    assert k("logs", "--details", "det2").stdout == " plain\n"
    k("run", "--network", "none", "--name", "det3", "-l", "app.x=1", "-l", "b=2", "-e", "APP_MODE=on",
      "--log-opt", "labels-regex=^app", "--log-opt", "env-regex=^APP_", "busybox", "echo", "r")
    assert k("logs", "--details", "det3").stdout == "APP_MODE=on,app.x=1 r\n"
    r = k("run", "--network", "none", "--log-opt", "labels-regex=(", "busybox", "true", check=False)
    assert r.returncode == 125 and "labels-regex" in r.stderr
    k("rm", "det", "det2", "det3")


def test_top_is_an_event(k, ketchd):
    k("run", "--network", "none", "-d", "--name", "topped", "busybox", "sleep", "60")
    since = str(int(time.time()) - 1)
    assert "sleep 60" in k("top", "topped").stdout
    if DOCKER:
        ketchd.docker("top", "topped")
    until = str(int(time.time()) + 1)
    ev = k("events", "--since", since, "--until", until, "-f", "container=topped", "-f", "event=top",
           "--format", "{{.Action}} {{.Actor.Attributes.name}}").stdout.splitlines()
    assert ev == ["top topped"] * (2 if DOCKER else 1)
    k("rm", "-f", "topped")


def test_ps_durations_are_go_units(k, ketchd):
    k("run", "--network", "none", "-d", "--name", "young", "busybox", "sleep", "60")
    seen: set[str] = set()
    deadline = time.time() + 4
    while time.time() < deadline and not {"Up 1 second", "1 second ago"} <= seen:
        seen.update(k("ps", "-f", "name=young", "--format", "{{.Status}}\n{{.RunningFor}}").stdout.splitlines())
    assert {"Up 1 second", "1 second ago"} <= seen, seen
    assert not any("1 seconds" in s for s in seen)
    if DOCKER:
        out = ketchd.docker("ps", "-f", "name=young", "--format", "{{.Status}}|{{.RunningFor}}").stdout
        span = r"(1 second|\d+ seconds|About a minute)"
        assert re.fullmatch(rf"Up {span}\|{span} ago\n", out), out
    k("rm", "-f", "young")


def test_info_total_memory_in_gib_and_the_runtime_by_name(k, ketchd):
    info = json.loads(k("info", "--format", "{{json .}}").stdout)
    text = k("info").stdout
    assert f" Total Memory: {bytes_size(info['MemTotal'])}\n" in text
    assert re.search(r" Total Memory: \d+(\.\d+)?GiB\n", text), text
    name = info["DefaultRuntime"]
    assert name == os.path.basename(name) and name in info["Runtimes"] and "runc" in info["Runtimes"]
    assert f" Default Runtime: {name}\n" in text
    comps = json.loads(k("version", "--format", "{{json .Server.Components}}").stdout)
    assert [c["Name"] for c in comps] == ["Engine", name] and comps[1]["Version"] and "/" not in comps[1]["Version"]
    if DOCKER:
        d = ketchd.docker("info").stdout
        assert f" Total Memory: {bytes_size(info['MemTotal'])}\n" in d and f" Default Runtime: {name}\n" in d


def test_system_df_verbose_is_dockers_tables(k, ketchd):
    k("run", "--network", "none", "-d", "--name", "dfv", "busybox", "sleep", "60")
    out = k("system", "df", "-v").stdout
    sections = ["Images space usage:", "Containers space usage:", "Local Volumes space usage:",
                "Build cache usage: 0B"]
    lines = out.splitlines()
    assert [line for line in lines if line in sections] == sections, out
    after = {s: lines[lines.index(s) + 2] for s in sections}
    assert _columns(after["Images space usage:"]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE",
                                                      "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"]
    assert _columns(after["Containers space usage:"]) == ["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES",
                                                          "SIZE", "CREATED", "STATUS", "NAMES"]
    assert _columns(after["Local Volumes space usage:"]) == ["VOLUME NAME", "LINKS", "SIZE"]
    assert _columns(after["Build cache usage: 0B"]) == ["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED",
                                                        "USAGE", "SHARED"]
    img = _columns(lines[lines.index("Images space usage:") + 3])
    users = k("ps", "-aq", "-f", "ancestor=busybox").stdout.split()
    assert img[:2] == ["busybox", "latest"] and img[-1] == str(len(users))
    row = _columns(lines[lines.index("Containers space usage:") + 3])
    assert row[1:4] == ["busybox", '"sleep 60"', "0"] and row[-1] == "dfv" and row[-2].startswith("Up ")
    r = k("system", "df", "-v", "--format", "{{.Type}}", check=False)
    assert r.returncode != 0 and "the verbose and the format options conflict" in r.stderr
    if DOCKER:
        d = ketchd.docker("system", "df", "-v").stdout.splitlines()
        assert [line for line in d if line in sections] == sections
        for s in sections:
            assert _columns(d[d.index(s) + 2]) == _columns(after[s])
        assert _columns(d[d.index("Images space usage:") + 3])[:3] == img[:3]
    k("rm", "-f", "dfv")


def _derived_image(k, tmp_path, name: str) -> None:
    """Load an image made of busybox's layer plus one of its own (what a build FROM busybox gives)."""
    saved = tmp_path / "bb.tar"
    k("save", "-o", str(saved), "busybox")
    layer = io.BytesIO(helpers.tar_of({"derived.txt": b"derived\n"}))
    import hashlib
    out = tmp_path / "derived.tar"
    with tarfile.open(saved) as src, tarfile.open(out, "w") as dst:
        manifest = json.load(src.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(src.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(layer.getvalue()).hexdigest())
        for m in src.getmembers():
            if m.isfile() and m.name in manifest["Layers"]:
                dst.addfile(m, src.extractfile(m))
        cfg = json.dumps(config).encode()
        cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
        files = {"extra/layer.tar": layer.getvalue(), cfg_name: cfg,
                 "manifest.json": json.dumps([{"Config": cfg_name, "RepoTags": [f"{name}:latest"],
                                               "Layers": manifest["Layers"] + ["extra/layer.tar"]}]).encode()}
        for path, data in files.items():
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            dst.addfile(ti, io.BytesIO(data))
    k("load", "-q", "-i", str(out))


def test_ancestor_matches_images_built_on_the_named_one(k, ketchd, tmp_path):
    _derived_image(k, tmp_path, "derived")
    base = k("create", "--network", "none", "--name", "anc-base", "busybox", "true").stdout.strip()
    child = k("create", "--network", "none", "--name", "anc-child", "derived", "cat", "/derived.txt").stdout.strip()
    assert k("start", "-a", "anc-child").stdout == "derived\n"

    def ps(value):
        return sorted(k("ps", "-aq", "--no-trunc", "-f", f"ancestor={value}").stdout.split())
    assert ps("busybox") == sorted([base, child])        # derived's layers start with busybox's
    assert ps("derived") == [child]                      # but busybox does not descend from derived
    assert ps("derived:latest") == [child]
    assert ps("nosuchimage") == []
    from urllib.parse import quote
    _, items = ketchd.json("GET", "/containers/json?all=1&filters=" + quote(json.dumps({"ancestor": ["busybox"]})),
                           expect=200)
    assert sorted(c["Id"] for c in items) == sorted([base, child])
    if DOCKER:
        assert sorted(ketchd.docker("ps", "-aq", "--no-trunc", "-f", "ancestor=busybox").stdout.split()) == \
            sorted([base, child])
    k("rm", "anc-base", "anc-child")
    k("rmi", "derived")


def test_logs_details_stream_follows(k):
    """--details with -f: the prefix is on every line as it arrives."""
    k("run", "--network", "none", "-d", "--name", "detf", "--log-opt", "env=N", "-e", "N=1", "busybox", "sh", "-c",
      "echo a; sleep 0.5; echo b")
    p = k.popen("logs", "-f", "--details", "detf")
    out, _ = p.communicate(timeout=30)
    assert out.decode() == "N=1 a\nN=1 b\n"
    wait_for(lambda: k("inspect", "-f", "{{.State.Status}}", "detf").stdout.strip() == "exited")
    k("rm", "detf")

