"""Builds through the real clients against the module's ketchd: the docker CLI's legacy builder
(DOCKER_BUILDKIT=0), docker-py's images.build() (a directory, a context tar as fileobj) and
docker-compose build (Debian's 1.29)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile

import pytest

from tests import helpers
from tests.build.conftest import write_tree
from tests.storage.conftest import image_config

DF = """\
FROM busybox AS build
ARG WHO=world
RUN echo "hello $WHO" > /greeting
FROM busybox
COPY --from=build /greeting /greeting
COPY app.txt /app.txt
CMD ["cat", "/greeting"]
"""


def _docker(d, *args, cwd=None, input=None):
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=os.path.join(d.base, "dockercfg"), DOCKER_BUILDKIT="0")
    return subprocess.run([shutil.which("docker") or "docker", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, input=input, timeout=300)


def test_docker_cli_legacy_builder(ketchd, docker_cli, tmp_path):
    write_tree(tmp_path, {"Dockerfile": DF, "app.txt": "app\n", ".dockerignore": "junk\n", "junk": "x"})
    r = _docker(ketchd, "build", "-t", "dk:1", "--build-arg", "WHO=docker", "--iidfile", str(tmp_path / "iid"), ".",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "Step 1/7 : FROM busybox AS build" in r.stdout and "Successfully tagged dk:1" in r.stdout
    assert (tmp_path / "iid").read_text().startswith("sha256:")
    assert docker_cli("run", "--rm", "dk:1").stdout == "hello docker\n"
    # the second build comes from the cache
    r = _docker(ketchd, "build", "-t", "dk:1", "--build-arg", "WHO=docker", ".", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count("Using cache") == 5, r.stdout
    # a failing RUN: dockerd's words and its exit code
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN false\n")
    r = _docker(ketchd, "build", ".", cwd=tmp_path)
    assert r.returncode == 1
    assert "The command '/bin/sh -c false' returned a non-zero code: 1" in r.stderr
    # a Dockerfile error with its line, before any step
    (tmp_path / "Dockerfile").write_text("FROM busybox\n\nEXPOSE\n")
    r = _docker(ketchd, "build", ".", cwd=tmp_path)
    assert r.returncode == 1 and "dockerfile parse error on line 3: EXPOSE requires at least one argument" \
        in r.stderr, r.stderr
    assert "Step" not in r.stdout
    # -f - with the Dockerfile on stdin and a context directory; --target
    r = _docker(ketchd, "build", "-t", "dk:2", "--target", "build", "-f", "-", ".", cwd=tmp_path, input=DF)
    assert r.returncode == 0, r.stderr
    assert docker_cli("run", "--rm", "dk:2", "cat", "/greeting").stdout == "hello world\n"
    assert docker_cli("ps", "-aq").stdout == ""


def test_docker_py_images_build(ketchd, dpy, tmp_path):
    docker = pytest.importorskip("docker")
    write_tree(tmp_path, {"Dockerfile": DF, "app.txt": "app\n"})
    image, logs = dpy.images.build(path=str(tmp_path), tag="dpy:1", buildargs={"WHO": "py"}, rm=True)
    assert "dpy:1" in image.tags
    assert any("Successfully built" in (c.get("stream") or "") for c in logs)
    assert dpy.containers.run("dpy:1", remove=True) == b"hello py\n"
    # a context tar as fileobj (custom_context)
    buf = io.BytesIO(helpers.tar_of({"Dockerfile": b"FROM busybox\nLABEL from=fileobj\nCMD [\"true\"]\n"}))
    image, _ = dpy.images.build(fileobj=buf, custom_context=True, tag="dpy:2")
    assert image.labels == {"from": "fileobj"}
    # a bare Dockerfile as fileobj (no context)
    image, _ = dpy.images.build(fileobj=io.BytesIO(b"FROM busybox\nENV BARE=1\n"), tag="dpy:3")
    assert "BARE=1" in image.attrs["Config"]["Env"]
    with pytest.raises(docker.errors.BuildError) as e:
        dpy.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN exit 4\n"))
    assert "returned a non-zero code: 4" in str(e.value)
    with pytest.raises(docker.errors.APIError) as e2:
        dpy.images.build(fileobj=io.BytesIO(b"FROM busybox\nWRONG x\n"))
    assert "unknown instruction: WRONG" in str(e2.value)


def test_docker_compose_build(ketchd, tmp_path):
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose is not installed")
    write_tree(tmp_path, {"web/Dockerfile": "FROM busybox\nARG MSG\nRUN echo $MSG > /msg\nCMD [\"cat\", \"/msg\"]\n",
                          "docker-compose.yml": "version: '3'\nservices:\n  web:\n    build:\n      context: ./web\n"
                                                "      args:\n        MSG: composed\n    image: composed:1\n"})
    ketchd.compose(tmp_path, tmp_path.name, "build", timeout=300,
                   env={"DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"})
    assert image_config(ketchd, "composed:1")["config"]["Cmd"] == ["cat", "/msg"]
    out = ketchd.docker("run", "--rm", "composed:1").stdout
    assert out == "composed\n"
