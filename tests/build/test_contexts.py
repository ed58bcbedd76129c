"""`ketch build --build-context NAME=DIR|docker-image://REF`: named contexts through the real CLI and
POST /build's `ketchcontexts` (the directories in the one context tar): COPY --from, RUN
--mount=from= and FROM read them, a context replaces a stage and an image of its name, each
directory's own .dockerignore applies, the main context does not see them, and the cache is exact
(content and metadata of what is read, never mtimes, never files outside the copied set). Also a
bind mount of the main context is keyed by what it shows."""

from __future__ import annotations

import io
import json
import os
import tarfile
from urllib.parse import urlencode

from tests.build.conftest import context_tar, stream_text, write_tree
from tests.storage.conftest import image_config

DOCKERFILE = """\
FROM busybox AS src
RUN echo this stage is replaced by the context && false
FROM base
COPY . /main/
COPY --from=src hello.txt /hello.txt
COPY --from=src . /all/
RUN --mount=type=bind,from=src,target=/mnt cat /mnt/hello.txt /mnt/sub/deep.txt > /bound
FROM tree AS fromdir
FROM base
COPY --from=0 /hello.txt /hello.txt
COPY --from=fromdir / /tree/
COPY --from=pinned /bin/busybox /pinned-busybox
CMD ["cat", "/hello.txt"]
"""


def _run(ketch, image, *cmd) -> str:
    return ketch("run", "--rm", image, *cmd).stdout


def _layout(tmp_path) -> None:
    write_tree(tmp_path, {
        "ctx/Dockerfile": DOCKERFILE, "ctx/main.txt": "main\n", "ctx/.dockerignore": "*.log\n",
        "ctx/skip.log": "main's ignored\n",
        "named/hello.txt": "hello from the named context\n", "named/sub/deep.txt": "deep\n",
        "named/ignored.txt": "named's ignored\n", "named/kept.log": "the main .dockerignore does not apply\n",
        "named/.dockerignore": "ignored.txt\n",
        "tree/etc/motd": "a directory as a stage's root\n",
    })


def _build(ketch, tmp_path, tag, *extra):
    return ketch("build", "--progress", "plain", "-t", tag, "--build-context", f"src={tmp_path / 'named'}",
                 "--build-context", "base=docker-image://busybox", "--build-context", f"tree={tmp_path / 'tree'}",
                 "--build-context", "pinned=docker-image://busybox:latest", *extra, str(tmp_path / "ctx"))


def test_named_contexts_through_ketch_build(ketchd, ketch, tmp_path):
    _layout(tmp_path)
    r = _build(ketch, tmp_path, "ctx:1")
    assert "replaced by the context" not in r.stdout + r.stderr
    assert _run(ketch, "ctx:1") == "hello from the named context\n"
    # the first stage's image (a final stage FROM base, an image context: busybox)
    out = _run(ketch, "ctx:1", "sh", "-c", "cat /tree/etc/motd; ls -a /tree; cmp /pinned-busybox /bin/busybox && "
                                           "echo same")
    assert out.splitlines() == ["a directory as a stage's root", ".", "..", "etc", "same"]
    # FROM a directory context: its files, no config of an image
    cfgs = json.loads(ketch("image", "inspect", "ctx:1").stdout)[0]
    assert cfgs["Config"]["Cmd"] == ["cat", "/hello.txt"]


def test_contexts_read_by_copy_mount_and_from(ketchd, ketch, tmp_path):
    _layout(tmp_path)
    (tmp_path / "ctx" / "Dockerfile").write_text(DOCKERFILE.split("FROM tree")[0])
    _build(ketch, tmp_path, "ctx:2")
    out = _run(ketch, "ctx:2", "sh", "-c", "cat /hello.txt /bound; ls -a /all /main")
    lines = out.splitlines()
    assert lines[:3] == ["hello from the named context", "hello from the named context", "deep"], out
    listing = out.split("/main:")[1].split()
    # the named context's own .dockerignore applied (ignored.txt), not the main one's (*.log)
    assert set(out.split("/all:")[1].split("/main:")[0].split()) == {".", "..", ".dockerignore", "hello.txt",
                                                                     "kept.log", "sub"}
    # the main context sees nothing of the named ones, and its own .dockerignore holds
    assert set(listing) == {".", "..", ".dockerignore", "Dockerfile", "main.txt"}, listing
    # the image context replaced FROM base (busybox's own layers), with busybox's config
    cfg = image_config(ketchd, "ctx:2")
    busy = image_config(ketchd, "busybox")
    assert cfg["rootfs"]["diff_ids"][:len(busy["rootfs"]["diff_ids"])] == busy["rootfs"]["diff_ids"]


def _step_lines(text: str) -> list[str]:
    """Each step's first line and whether it was cached, from `--progress plain`."""
    steps: dict[str, str] = {}
    cached = set()
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].startswith("#") and parts[1].startswith("["):
            steps.setdefault(parts[0], parts[1] + " " + parts[2])
        if len(parts) >= 2 and parts[0].startswith("#") and parts[1] == "CACHED":
            cached.add(parts[0])
    return [("CACHED " if n in cached else "RAN ") + s for n, s in steps.items()]


def _ran(text: str) -> list[str]:
    return [s[4:] for s in _step_lines(text) if s.startswith("RAN ") and " FROM " not in s]


def test_the_cache_is_exact_over_named_contexts(ketchd, ketch, tmp_path):
    _layout(tmp_path)
    (tmp_path / "ctx" / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY --from=src hello.txt /hello.txt\n"
        "RUN --mount=type=bind,from=src,source=sub,target=/mnt cat /mnt/deep.txt > /bound\n"
        "RUN --mount=type=bind,source=main.txt,target=/m.txt cat /m.txt > /main-bound\n"
        "COPY --from=tree / /tree/\n")

    def build():
        r = ketch("build", "--progress", "plain", "-t", "exact:1", "--build-context", f"src={tmp_path / 'named'}",
                  "--build-context", f"tree={tmp_path / 'tree'}", str(tmp_path / "ctx"))
        return r.stdout + r.stderr
    first = build()
    assert len(_ran(first)) == 4, _step_lines(first)
    assert _ran(build()) == []                          # fully cached
    os.utime(tmp_path / "named" / "hello.txt", (1, 1))   # an mtime invalidates nothing
    (tmp_path / "named" / "unread.txt").write_text("a sibling outside every copied set\n")
    assert _ran(build()) == []
    (tmp_path / "named" / "hello.txt").write_text("changed\n")   # the COPY from it, and what follows
    ran = _ran(build())
    assert len(ran) == 4 and "COPY --from=src hello.txt" in ran[0], ran
    (tmp_path / "named" / "sub" / "deep.txt").write_text("deeper\n")   # the bind mount's source
    ran = _ran(build())
    assert len(ran) == 3 and "RUN --mount=type=bind,from=src" in ran[0], ran
    (tmp_path / "ctx" / "main.txt").write_text("main changed\n")   # a bind mount of the main context
    ran = _ran(build())
    assert len(ran) == 2 and "source=main.txt" in ran[0], ran
    os.chmod(tmp_path / "tree" / "etc" / "motd", 0o600)   # metadata of the copied set is in the key
    ran = _ran(build())
    assert len(ran) == 1 and "COPY --from=tree" in ran[0], ran
    out = _run(ketch, "exact:1", "sh", "-c", "cat /hello.txt /bound /main-bound; stat -c %a /tree/etc/motd")
    assert out.splitlines() == ["changed", "deeper", "main changed", "600"]


def test_a_context_replaces_an_image_and_a_tar_context_carries_contexts(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"named/a.txt": "A\n"})
    df = "FROM alpine:latest\nCOPY --from=files a.txt /a.txt\nRUN cat /a.txt > /b.txt\n"
    # `alpine` is not here and there is no network: the context named alpine replaces it
    r = ketch("build", "-t", "replaced:1", "--build-context", "alpine=docker-image://busybox",
              "--build-context", f"files={tmp_path / 'named'}", "-", input=df)
    assert _run(ketch, "replaced:1", "cat", "/b.txt") == "A\n", r.stderr
    # a tar on stdin, with the directory context added to it by the CLI
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = df.encode()
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    r = ketch("build", "-t", "replaced:2", "--build-context", "alpine=docker-image://busybox",
              "--build-context", f"files={tmp_path / 'named'}", "-", input=buf.getvalue(), text=False)
    assert _run(ketch, "replaced:2", "cat", "/b.txt") == "A\n"


def test_refusals_and_api_errors(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"ctx/Dockerfile": "FROM busybox\nCOPY --from=x f /f\n"})
    ctx = str(tmp_path / "ctx")
    for value, word in (("x=https://example.com/c.tar", "git or URL"), ("x=git@github.com:a/b.git", "git or URL"),
                        ("x=oci-layout:///tmp/l", "OCI layout"), ("X=/tmp", "invalid context name"),
                        (f"x={tmp_path / 'missing'}", "is not a directory")):
        r = ketch("build", "--build-context", value, ctx, check=False)
        assert r.returncode == 125 and word in r.stderr, (value, r.stderr)
    body = context_tar(tmp_path / "ctx")
    for q, word in (({"x": {"Type": "git", "Ref": "a"}}, "Type 'git' is not supported"),
                    ({"x": {"Type": "dir", "Path": "../etc"}}, "is not .ketchcontexts."),
                    ({"x": {"Type": "dir", "Path": ".ketchcontexts.a/0"}}, "is not a directory of the body's tar"),
                    ({"x": {"Type": "image", "Ref": "Bad Ref"}}, "invalid reference format")):
        status, _, answer = ketchd.request("POST", "/build?" + urlencode({"ketchcontexts": json.dumps(q)}), raw=body,
                                           headers={"Content-Type": "application/x-tar"})
        assert status == 400 and word in json.loads(answer)["message"], (q, answer)
    # a context directory that is a symlink in the tar (to a host directory) is refused
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        df = b"FROM busybox\nCOPY --from=x passwd /p\n"
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(df)
        tf.addfile(ti, io.BytesIO(df))
        for name, target in ((".ketchcontexts.a", "/"), (".ketchcontexts.b", ""), (".ketchcontexts.b/0", "/etc")):
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = (tarfile.SYMTYPE, target) if target else (tarfile.DIRTYPE, "")
            tf.addfile(ti)
    for path in (".ketchcontexts.a/etc", ".ketchcontexts.b/0"):
        q = {"x": {"Type": "dir", "Path": path}}
        status, _, answer = ketchd.request("POST", "/build?" + urlencode({"ketchcontexts": json.dumps(q)}),
                                           raw=buf.getvalue(), headers={"Content-Type": "application/x-tar"})
        assert status == 400 and "is not a directory of the body's tar" in json.loads(answer)["message"], answer
    # a context the Dockerfile does not read is fine; a --from naming neither stage, context nor image is not
    status, _, answer = ketchd.request("POST", "/build?" + urlencode(
        {"ketchcontexts": json.dumps({"y": {"Type": "image", "Ref": "busybox"}})}), raw=body,
        headers={"Content-Type": "application/x-tar"})
    assert status == 200 and "--from=x" in stream_text([json.loads(x) for x in answer.decode().splitlines()])


def test_a_replaced_target_scratch_and_full_names(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"ctx/Dockerfile": "FROM busybox AS app\nRUN false\n"
                                            "FROM docker.io/library/busybox:latest\nCOPY --from=empty . /e/\n"
                                            "RUN ls -a /e > /e.txt\n",
                          "app/marker": "from the directory\n"})
    # --target names a stage a context replaces: the result is the context (a directory: its files)
    out = tmp_path / "out"
    r = ketch("build", "--progress", "plain", "--target", "app", "--build-context", f"app={tmp_path / 'app'}",
              "-o", f"type=local,dest={out}", str(tmp_path / "ctx"))
    assert (out / "marker").read_text() == "from the directory\n" and "RUN false" not in r.stdout + r.stderr
    # `FROM docker.io/library/busybox:latest` is the context named busybox; docker-image://scratch is empty
    ketch("build", "-t", "marked:1", "-", input="FROM busybox\nRUN echo marked > /marker\n")
    ketch("build", "-t", "ctx:5", "--build-context", "busybox=docker-image://marked:1",
          "--build-context", "empty=docker-image://scratch", str(tmp_path / "ctx"))
    assert _run(ketch, "ctx:5", "cat", "/marker") == "marked\n"
    assert _run(ketch, "ctx:5", "cat", "/e.txt").split() == [".", ".."]
    # and a context given by a full reference is known by its familiar name
    ketch("build", "--progress", "plain", "--build-context", "docker.io/library/app:latest="
              f"{tmp_path / 'app'}", "--build-context", "empty=docker-image://scratch", "--target", "app",
              "-o", f"type=local,dest={tmp_path / 'out2'}", str(tmp_path / "ctx"))
    assert (tmp_path / "out2" / "marker").exists()
