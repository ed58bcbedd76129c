"""`ketch build --cache-from IMAGE` and POST /build's `cachefrom`: an image pushed to the real
docker-registry, removed here with every build cache record, seeds the cache of the next build
through its history and layers alone (the classic builder's rule), and a step whose inputs changed
misses from there on."""

from __future__ import annotations

import json
import re

import pytest

from tests.registry.conftest import start_registry

from .conftest import api_build, built_id, stream_text, write_tree

DOCKERFILE = """\
FROM busybox
ENV GREETING=hello
RUN echo "$GREETING from run" > /run.txt
COPY a.txt /a.txt
RUN cat /run.txt /a.txt > /both.txt
COPY b.txt /b.txt
CMD ["cat", "/both.txt"]
"""
STEPS = 6   # after FROM


@pytest.fixture
def registry(tmp_path):
    reg = start_registry(tmp_path)
    yield reg
    reg.stop()


def _inspect(ketch, ref: str) -> dict:
    return json.loads(ketch("image", "inspect", ref).stdout)[0]


def _forget(ketch, *refs: str) -> None:
    """The images gone and every build cache record with them: nothing here but busybox."""
    ketch("rmi", "-f", *refs)
    ketch("builder", "prune", "-af")
    ketch("image", "prune", "-f")
    left = ketch("images", "-a", "--format", "{{.Repository}}").stdout.split()
    assert left == ["busybox"], left


def _cached(stderr: str) -> list[str]:
    """The names of the steps `--progress plain` reported CACHED."""
    names = dict(re.findall(r"^(#\d+) (\[.*)$", stderr, re.M))
    return [names[v] for v in re.findall(r"^(#\d+) CACHED$", stderr, re.M)]


def _build(ketch, ctx, *flags):
    return ketch("build", "--progress", "plain", "--network", "none", *flags, str(ctx))


def test_cache_from_a_pulled_image_reuses_its_layers_and_misses_from_a_changed_copy(ketch, registry, tmp_path):
    ref = f"{registry.domain}/cf/app:1"
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"Dockerfile": DOCKERFILE, "a.txt": "a one\n", "b.txt": "b\n"})
    _build(ketch, ctx, "-t", ref)
    first = _inspect(ketch, ref)
    ketch("push", ref)
    _forget(ketch, ref)

    # every step from the pulled image: nothing runs, the very same layers (and image)
    r = _build(ketch, ctx, "--cache-from", ref, "-t", "cf:2")
    assert len(_cached(r.stderr)) == STEPS, r.stderr
    again = _inspect(ketch, "cf:2")
    assert again["RootFS"]["Layers"] == first["RootFS"]["Layers"]
    assert again["Id"] == first["Id"]
    assert ketch("run", "--rm", "--network", "none", "cf:2").stdout == "hello from run\na one\n"
    # a hit is kept in the cache: the next build needs no --cache-from
    assert len(_cached(_build(ketch, ctx, "-t", "cf:3").stderr)) == STEPS
    _forget(ketch, ref, "cf:2", "cf:3")

    # a COPY whose source changed misses, and so does every step after it
    (ctx / "a.txt").write_text("a two\n")
    r = _build(ketch, ctx, "--cache-from", ref, "-t", "cf:4")
    assert _cached(r.stderr) == ["[2/7] ENV GREETING=hello", '[3/7] RUN echo "$GREETING from run" > /run.txt'], \
        r.stderr
    changed = _inspect(ketch, "cf:4")
    assert changed["RootFS"]["Layers"][:2] == first["RootFS"]["Layers"][:2]   # busybox, the RUN's
    assert changed["RootFS"]["Layers"][2] != first["RootFS"]["Layers"][2]
    assert ketch("run", "--rm", "--network", "none", "cf:4").stdout == "hello from run\na two\n"
    _forget(ketch, ref, "cf:4")

    # the same sources and words but another --chmod: its history text is the same, what it reads is
    # not (the entry's comment), so it misses too
    (ctx / "a.txt").write_text("a one\n")
    write_tree(ctx, {"Dockerfile": DOCKERFILE.replace("COPY a.txt", "COPY --chmod=600 a.txt")})
    r = _build(ketch, ctx, "--cache-from", ref, "-t", "cf:5")
    assert len(_cached(r.stderr)) == 2, r.stderr
    hist = json.loads(ketch("history", "--no-trunc", "--format", "{{json .}}", "cf:5").stdout.splitlines()[3])
    assert hist["CreatedBy"].startswith("/bin/sh -c #(nop) COPY file:") and hist["Comment"].startswith(
        "ketch.build.v1 inputs=sha256:"), hist
    _forget(ketch, ref, "cf:5")


def test_cache_from_not_found_is_a_warning(ketch, ketchd, registry, tmp_path):
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"Dockerfile": "FROM busybox\nRUN echo x > /x\n"})
    missing = f"{registry.domain}/cf/missing:1"   # a registry here that has no such image: no traffic out
    r = _build(ketch, ctx, "--cache-from", missing, "--cache-from", "cf-never-built:1", "-t", "cfw:1")
    assert f"--cache-from {missing}: the image is not here and could not be pulled" in r.stderr + r.stdout
    assert ketch("run", "--rm", "--network", "none", "cfw:1", "cat", "/x").stdout == "x\n"
    ketch("rmi", "cfw:1")
    # buildx's cache imports are refused by name; a malformed reference is a 400
    r = ketch("build", "--cache-from", "type=local,src=/tmp", str(ctx), check=False)
    assert r.returncode == 125 and "--cache-from type=local,src=/tmp" in r.stderr, r.stderr
    status, msgs = api_build(ketchd, ctx, cachefrom='["UPPER/Case::x"]')
    assert status == 400 and "invalid reference format" in msgs[0]["message"], msgs
    status, msgs = api_build(ketchd, ctx, cachefrom='{"a": 1}')
    assert status == 400 and "cachefrom" in msgs[0]["message"], msgs


def test_docker_py_cache_from(ketch, ketchd, dpy, registry, tmp_path):
    ref = f"{registry.domain}/cf/dpy:1"
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"Dockerfile": DOCKERFILE, "a.txt": "a\n", "b.txt": "b\n"})
    status, msgs = api_build(ketchd, ctx, t=ref, networkmode="none")
    assert status == 200, msgs
    first = built_id(msgs)
    ketch("push", ref)
    _forget(ketch, ref)
    ketch("pull", ref)   # here already: used as it is
    image, logs = dpy.images.build(path=str(ctx), tag="cfdpy:2", cache_from=[ref], network_mode="none")
    text = "".join(c.get("stream") or "" for c in logs)
    assert text.count("Using cache") == STEPS and "Running in" not in text, text
    assert image.id == first
    # the API's own stream: each step's ` ---> Using cache`
    _forget(ketch, ref, "cfdpy:2")
    status, msgs = api_build(ketchd, ctx, cachefrom=json.dumps([ref]), networkmode="none")
    assert status == 200 and stream_text(msgs).count("Using cache") == STEPS, stream_text(msgs)
    assert built_id(msgs) == first
    _forget(ketch, ref)


def test_docker_cli_legacy_builder_cache_from(ketch, ketchd, docker_cli, registry, tmp_path):
    from tests.build.test_compat import _docker
    ref = f"{registry.domain}/cf/cli:1"
    write_tree(tmp_path, {"Dockerfile": DOCKERFILE, "a.txt": "a\n", "b.txt": "b\n"})
    r = _docker(ketchd, "build", "-t", ref, "--network", "none", ".", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    first = _inspect(ketch, ref)
    ketch("push", ref)
    _forget(ketch, ref)
    r = _docker(ketchd, "build", "--cache-from", ref, "-t", "cfcli:2", "--network", "none", ".", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.count("Using cache") == STEPS and "Running in" not in r.stdout, r.stdout
    assert _inspect(ketch, "cfcli:2")["RootFS"]["Layers"] == first["RootFS"]["Layers"]
    _forget(ketch, ref, "cfcli:2")


def test_cache_from_multi_stage_and_no_cache(ketch, registry, tmp_path):
    """Only the final stage is in the pushed image: the build stage runs again, and the final stage's
    COPY --from is a hit when what it copies is the same (its content digest, not the stage's ID)."""
    ref = f"{registry.domain}/cf/multi:1"
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"Dockerfile": "FROM busybox AS build\nRUN echo built > /out\n"
                                   "FROM busybox\nCOPY --from=build /out /out\nCMD [\"cat\", \"/out\"]\n"})
    _build(ketch, ctx, "-t", ref)
    first = _inspect(ketch, ref)
    ketch("push", ref)
    _forget(ketch, ref)
    r = _build(ketch, ctx, "--cache-from", ref, "-t", "cfm:2")
    assert _cached(r.stderr) == ["[stage-1 2/3] COPY --from=build /out /out", '[stage-1 3/3] CMD ["cat", "/out"]'], \
        r.stderr
    assert _inspect(ketch, "cfm:2")["Id"] == first["Id"]
    _forget(ketch, ref, "cfm:2")
    # --no-cache turns --cache-from off too: nothing reused, nothing pulled
    r = _build(ketch, ctx, "--no-cache", "--cache-from", ref, "-t", "cfm:3")
    assert _cached(r.stderr) == [], r.stderr
    assert _inspect(ketch, "cfm:3")["Id"] != first["Id"]
    assert ketch("image", "inspect", ref, check=False).returncode != 0
    _forget(ketch, "cfm:3")
