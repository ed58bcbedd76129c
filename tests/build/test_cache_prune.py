"""The build cache in `system df` and freed by `ketch builder prune` / `docker builder prune`
(POST /build/prune): cache mounts (exec.cachemount) and untagged step images (regular)."""

from __future__ import annotations

import json

from .conftest import write_tree

DOCKERFILE = """\
FROM busybox
RUN --mount=type=cache,target=/cache,id=pruned dd if=/dev/zero of=/cache/blob bs=1024 count=64 2>/dev/null; \
ls /cache > /listing
COPY data.txt /data.txt
RUN cat /data.txt > /copy.txt
"""


def _df(ketchd) -> dict:
    status, _, body = ketchd.request("GET", "/system/df")
    assert status == 200
    return json.loads(body)


def _build(ketch, tmp_path, tag, data="one\n", *flags):
    write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "data.txt": data})
    return ketch("build", "--network", "none", *flags, "-t", tag, str(tmp_path / "ctx")).stdout


def test_df_counts_cache_mounts_and_step_images_and_prune_frees_them(ketchd, ketch, docker_cli, tmp_path):
    ketch("builder", "prune", "-af")
    _build(ketch, tmp_path, "cachetest:1")
    d = _df(ketchd)
    mounts = [b for b in d["BuildCache"] if b["Type"] == "exec.cachemount"]
    assert len(mounts) == 1, d["BuildCache"]
    m = mounts[0]
    assert set(m) == {"ID", "Type", "Size", "CreatedAt", "LastUsedAt", "UsageCount", "InUse", "Shared",
                      "Description"}
    assert m["Size"] >= 64 * 1024 and m["UsageCount"] == 1 and "/cache" in m["Description"]
    regular = [b for b in d["BuildCache"] if b["Type"] == "regular"]
    # under a tagged image the step images are its history: shared, not counted in BuilderSize
    assert regular and all(b["Shared"] for b in regular), regular
    assert d["BuilderSize"] == m["Size"]
    out = ketch("system", "df").stdout
    assert "Build Cache" in out

    # a second build that runs the step again mounts the same cache
    _build(ketch, tmp_path, "cachetest:2", "two\n", "--no-cache")
    m2 = [b for b in _df(ketchd)["BuildCache"] if b["Type"] == "exec.cachemount"][0]
    assert m2["UsageCount"] == 2 and m2["ID"] == m["ID"]

    # until= keeps what is newer; keep-storage above the size keeps everything
    assert "Total reclaimed space: 0B" in ketch("builder", "prune", "-f", "--filter", "until=1h").stdout
    assert "Total reclaimed space: 0B" in ketch("builder", "prune", "-f", "--keep-storage", "1g").stdout

    # the tags go: the step images are dangling build cache now
    ketch("rmi", "cachetest:1", "cachetest:2")
    d = _df(ketchd)
    regular = [b for b in d["BuildCache"] if b["Type"] == "regular"]
    assert regular and not any(b["Shared"] for b in regular)
    assert d["BuilderSize"] == sum(b["Size"] for b in d["BuildCache"])
    # the real docker CLI
    r = docker_cli("builder", "prune", "-f")
    assert "Deleted build cache objects:" in r.stdout and "Total reclaimed space:" in r.stdout
    for b in regular + [m]:
        assert b["ID"] in r.stdout
    d = _df(ketchd)
    assert d["BuildCache"] == [] and d["BuilderSize"] == 0
    ids = ketch("images", "-aq", "--no-trunc").stdout
    assert not any(b["Description"].split()[-1] in ids for b in regular)
    # nothing is cached any more: every step runs again
    out = _build(ketch, tmp_path, "cachetest:3")
    assert "Using cache" not in out


def test_prune_all_forgets_the_history_of_tagged_images_and_bad_filters(ketchd, ketch, tmp_path):
    ketch("builder", "prune", "-af")
    _build(ketch, tmp_path, "cachetest:4", data="four\n")
    assert [b for b in _df(ketchd)["BuildCache"] if b["Shared"]]
    r = ketch("builder", "prune", "-f")
    assert all(b["Shared"] for b in _df(ketchd)["BuildCache"])     # shared ones stay without -a
    ketch("builder", "prune", "-af")
    assert _df(ketchd)["BuildCache"] == []
    assert ketch("run", "--rm", "--network", "none", "cachetest:4", "cat", "/copy.txt").stdout == "four\n"
    out = _build(ketch, tmp_path, "cachetest:5", data="four\n")
    assert "Using cache" not in out
    r = ketch("builder", "prune", "-f", "--filter", "label=x", check=False)
    assert r.returncode != 0 and "invalid filter" in r.stderr
    from urllib.parse import quote
    status, _, body = ketchd.request("POST", "/build/prune?filters=" + quote(json.dumps({"nope": ["1"]})))
    assert status == 400
