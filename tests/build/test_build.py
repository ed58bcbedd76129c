"""The build engine end to end against a ketchd of the module's own (real image service, local busybox
base, no network): through POST /build and through `ketch build`."""

from __future__ import annotations

import json
import os
import tarfile

from tests.build.conftest import api_build, built_id, stream_text, write_tree
from tests.storage.conftest import image_config


def _containers(d) -> list[dict]:
    return d.json("GET", "/containers/json?all=1", expect=200)[1]


def _run(ketch, image, *cmd) -> str:
    return ketch("run", "--rm", image, *cmd).stdout


MULTI = """\
FROM busybox AS build
ARG GREETING=hello
WORKDIR /src
COPY src/ ./
RUN echo "$GREETING from $(cat name.txt)" > /out.txt && mkdir -p /dist && cp /out.txt /dist/
FROM busybox AS unused
RUN echo this stage is not needed && false
FROM busybox
LABEL org.example.kind=demo
ENV APP=/app
COPY --from=build /dist/out.txt $APP/out.txt
EXPOSE 8080
CMD ["cat", "/app/out.txt"]
"""


def test_multi_stage_copy_from_skips_unneeded_stages(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"Dockerfile": MULTI, "src/name.txt": "ketch\n"})
    status, msgs = api_build(ketchd, tmp_path, t="multi:1")
    assert status == 200, msgs
    text = stream_text(msgs)
    assert "this stage is not needed" not in text
    assert "Successfully tagged multi:1" in text
    iid = built_id(msgs)
    assert text.count("Step ") == 11 and "Step 1/11 : FROM busybox AS build" in text
    assert _run(ketch, "multi:1") == "hello from ketch\n"
    cfg = image_config(ketchd, "multi:1")
    c = cfg["config"]
    assert c["Labels"]["org.example.kind"] == "demo"
    assert "APP=/app" in c["Env"] and c["ExposedPorts"] == {"8080/tcp": {}}
    assert c["Cmd"] == ["cat", "/app/out.txt"]
    # the history as Docker writes it: metadata steps are empty layers, COPY is one
    hist = cfg["history"][-5:]
    assert [h.get("empty_layer", False) for h in hist] == [True, True, False, True, True]
    assert hist[0]["created_by"] == "/bin/sh -c #(nop)  LABEL org.example.kind=demo"
    copy = hist[2]["created_by"]
    assert copy.startswith("/bin/sh -c #(nop) COPY file:") and copy.endswith(" in /app/out.txt ")
    assert hist[4]["created_by"] == '/bin/sh -c #(nop)  CMD ["cat" "/app/out.txt"]'
    # intermediate images are children, listed with -a only
    listed = {i["Id"] for i in ketchd.json("GET", "/images/json")[1]}
    every = {i["Id"] for i in ketchd.json("GET", "/images/json?all=1")[1]}
    assert iid in listed and len(every - listed) >= 5
    assert ketchd.json("GET", f"/images/{iid}/json")[1]["Parent"].startswith("sha256:")
    assert _containers(ketchd) == []


def test_second_build_is_cached_and_a_changed_file_invalidates_from_its_copy(ketchd, tmp_path):
    df = ("FROM busybox\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy\nCOPY b.txt /b.txt\n"
          "CMD [\"sh\"]\n")
    write_tree(tmp_path, {"Dockerfile": df, "a.txt": "A\n", "b.txt": "B\n", "other.txt": "x\n"})
    _, first = api_build(ketchd, tmp_path, t="cached:1")
    iid = built_id(first)
    assert "Using cache" not in stream_text(first)
    # again: every step from the cache, nothing runs, the same image
    _, again = api_build(ketchd, tmp_path, t="cached:1")
    assert stream_text(again).count(" ---> Using cache") == 5 and "Running in" not in stream_text(again)
    assert built_id(again) == iid
    # a new mtime and a sibling outside the copied set change nothing
    os.utime(tmp_path / "a.txt", (1, 1))
    (tmp_path / "other.txt").write_text("changed\n")
    _, touched = api_build(ketchd, tmp_path)
    assert built_id(touched) == iid
    # a changed content: the steps from its COPY on run again
    (tmp_path / "a.txt").write_text("A2\n")
    _, changed = api_build(ketchd, tmp_path, t="cached:2")
    text = changed_text = stream_text(changed)
    steps = text.split("Step ")[1:]
    assert [(" ---> Using cache" in s) for s in steps] == [False, True, False, False, False, False]
    assert "Running in" in changed_text
    # --no-cache (nocache=1) runs everything
    _, nocache = api_build(ketchd, tmp_path, nocache=1)
    assert "Using cache" not in stream_text(nocache)
    # a changed mode is a change (tarsum's headers), a changed mtime was not
    os.chmod(tmp_path / "b.txt", 0o600)
    _, moded = api_build(ketchd, tmp_path)
    assert stream_text(moded).count(" ---> Using cache") == 3   # from COPY b.txt on: b.txt, CMD


def test_build_args_and_target(ketchd, ketch, tmp_path):
    df = ("ARG BASE=busybox\nFROM $BASE AS first\nARG V=default\nARG UNSET\n"
          "RUN echo \"v=$V unset=${UNSET:-none}\" > /v\n"
          "FROM first AS second\nRUN echo second > /second\n")
    write_tree(tmp_path, {"Dockerfile": df})
    _, msgs = api_build(ketchd, tmp_path, t="args:1", target="first", buildargs={"V": "given", "NOPE": "x"})
    text = stream_text(msgs)
    assert "second" not in text.split("Successfully")[0].replace("AS second", "")
    assert "[Warning] One or more build-args [NOPE] were not consumed" in text
    assert _run(ketch, "args:1", "cat", "/v") == "v=given unset=none\n"
    hist = image_config(ketchd, "args:1")["history"]
    assert hist[-1]["created_by"] == '|1 V=given /bin/sh -c echo "v=$V unset=${UNSET:-none}" > /v'
    # the default when no build arg is given, and a build arg in the key: a miss
    _, msgs = api_build(ketchd, tmp_path, t="args:2", target="first")
    assert _run(ketch, "args:2", "cat", "/v") == "v=default unset=none\n"
    assert ketch("run", "--rm", "args:2", "test", "-e", "/second", check=False).returncode == 1
    status, msgs = api_build(ketchd, tmp_path, target="nosuch")
    assert status == 400 and 'target stage "nosuch" could not be found' in msgs[0]["message"]


def test_dockerignore_keeps_what_it_excludes_out(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nCOPY . /ctx/\n",
                          ".dockerignore": "secret*\n**/*.log\nlogs/\n!logs/keep.log\n",
                          "app.py": "print()\n", "secret.key": "k", "sub/debug.log": "d",
                          "logs/keep.log": "kept", "logs/drop.txt": "x"})
    _, msgs = api_build(ketchd, tmp_path, t="ignored:1")
    built_id(msgs)
    out = _run(ketch, "ignored:1", "find", "/ctx", "-type", "f")
    assert sorted(out.split()) == ["/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/app.py", "/ctx/logs/keep.log"]


def test_copy_rules_chown_chmod_globs_dirs_and_add_tar(ketchd, ketch, tmp_path):
    arch = tmp_path / "a.tar.gz"
    inner = tmp_path / "inner"
    write_tree(inner, {"x/y.txt": "from the tar\n"})
    with tarfile.open(arch, "w:gz") as tf:
        tf.add(inner / "x", arcname="x")
    df = ("FROM busybox\n"
          "RUN echo 'app:x:1234:2345::/home/app:/bin/sh' >> /etc/passwd && echo 'grp:x:2345:' >> /etc/group\n"
          "COPY --chown=app:grp --chmod=0640 *.txt /data/\n"
          "COPY dir /dir\n"
          "COPY dir/ /dir2/\n"
          "ADD a.tar.gz /unpacked/\n"
          "COPY <<EOF /here.txt\nheredoc $HOSTNAME\nEOF\n")
    write_tree(tmp_path, {"Dockerfile": df, "one.txt": "1", "two.txt": "2", "dir/sub/f": "f"})
    os.chmod(tmp_path / "dir" / "sub" / "f", 0o751)
    _, msgs = api_build(ketchd, tmp_path, t="copies:1")
    built_id(msgs)
    out = _run(ketch, "copies:1", "sh", "-c",
               "stat -c '%n %u %g %a' /data /data/one.txt /data/two.txt /dir/sub/f /dir2/sub/f;"
               " cat /unpacked/x/y.txt /here.txt")
    assert out.splitlines() == ["/data 1234 2345 755", "/data/one.txt 1234 2345 640", "/data/two.txt 1234 2345 640",
                                "/dir/sub/f 0 0 751", "/dir2/sub/f 0 0 751", "from the tar", "heredoc "]
    # several sources need a directory that ends in /
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nCOPY one.txt two.txt /nodir\n"})
    _, msgs = api_build(ketchd, tmp_path)
    assert "When using COPY with more than one source file, the destination must be a directory and end with a /" \
        in msgs[-1]["error"]
    # a source outside the context, a missing one and a git URL (refused before any download)
    for df, words in (("COPY ../x /x", "forbidden path outside the build context"),
                      ("COPY missing.txt /x", "missing.txt"),
                      ("ADD https://example.com/r.git /r", "git sources are not supported")):
        write_tree(tmp_path, {"Dockerfile": f"FROM busybox\n{df}\n"})
        _, msgs = api_build(ketchd, tmp_path)
        assert words in msgs[-1]["error"], msgs
    assert _containers(ketchd) == []


def test_run_mounts_network_and_onbuild(ketchd, ketch, tmp_path):
    df = ("FROM busybox\n"
          "RUN --mount=type=cache,target=/cache sh -c 'echo x >> /cache/hits; wc -l < /cache/hits > /hits'\n"
          "RUN --mount=type=tmpfs,target=/scratch touch /scratch/t && ! test -e /t\n"
          "RUN --mount=type=bind,source=ctx.txt,target=/mnt/ctx.txt cp /mnt/ctx.txt /from-bind\n"
          "RUN --network=none sh -c 'ls /sys/class/net | sort | tr \"\\n\" \" \" > /nets'\n"
          "ONBUILD RUN echo triggered > /trigger\n")
    write_tree(tmp_path, {"Dockerfile": df, "ctx.txt": "bound\n"})
    _, msgs = api_build(ketchd, tmp_path, t="mounts:1", nocache=1)
    built_id(msgs)
    _, msgs = api_build(ketchd, tmp_path, t="mounts:2", nocache=1)
    built_id(msgs)
    assert _run(ketch, "mounts:1", "cat", "/hits").strip() == "1"
    assert _run(ketch, "mounts:2", "cat", "/hits").strip() == "2"   # the cache mount outlives the build
    assert _run(ketch, "mounts:2", "cat", "/from-bind") == "bound\n"
    assert _run(ketch, "mounts:2", "cat", "/nets").split() == ["lo"]
    assert ketch("run", "--rm", "mounts:2", "test", "-e", "/cache/hits", check=False).returncode == 1
    assert image_config(ketchd, "mounts:2")["config"]["OnBuild"] == ["RUN echo triggered > /trigger"]
    write_tree(tmp_path, {"Dockerfile": "FROM mounts:2\nRUN cat /trigger\n"})
    _, msgs = api_build(ketchd, tmp_path, t="child:1")
    text = stream_text(msgs)
    assert "# Executing 1 build trigger" in text and "triggered" in text
    assert not image_config(ketchd, "child:1")["config"].get("OnBuild")
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nRUN --mount=type=ssh true\n"})
    status, msgs = api_build(ketchd, tmp_path)
    assert status == 501 and "type=ssh" in msgs[0]["message"]


def test_failing_run_reports_dockerds_words_and_leaves_nothing(ketchd, tmp_path):
    before = {i["Id"] for i in ketchd.json("GET", "/images/json?all=1")[1]}
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo partial > /p\nRUN echo about to fail; exit 3\n"})
    status, msgs = api_build(ketchd, tmp_path, t="fails:1")
    assert status == 200
    last = msgs[-1]
    assert last["error"] == "The command '/bin/sh -c echo about to fail; exit 3' returned a non-zero code: 3"
    assert last["errorDetail"]["code"] == 3
    assert "about to fail" in stream_text(msgs)
    assert _containers(ketchd) == []
    assert ketchd.request("GET", "/images/fails:1/json")[0] == 404
    after = {i["Id"] for i in ketchd.json("GET", "/images/json?all=1")[1]}
    assert len(after - before) <= 1   # the one step that succeeded, kept as the cache
    assert not os.listdir(os.path.join(ketchd.data_root, "build", "tmp"))


def test_dockerfile_error_names_its_line_before_any_step(ketchd, tmp_path):
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo hi\nFORM x\n"})
    status, msgs = api_build(ketchd, tmp_path)
    assert status == 400
    assert msgs[0]["message"] == "dockerfile parse error on line 3: unknown instruction: FORM (did you mean FROM?)"
    status, msgs = api_build(ketchd, tmp_path, dockerfile="Nope")
    assert status == 400 and msgs[0]["message"] == "Cannot locate specified Dockerfile: Nope"
    assert _containers(ketchd) == []


def test_ping_says_builder_version_1(ketchd):
    status, headers, _ = ketchd.request("GET", "/_ping")
    assert status == 200 and headers["Builder-Version"] == "1"


# --- ketch build ------------------------------------------------------------------------------------

def test_ketch_build_directory_file_stdin_iidfile_quiet(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"ctx/Dockerfile": "FROM busybox\nCOPY f /f\nCMD [\"cat\", \"/f\"]\n", "ctx/f": "cli\n",
                          "ctx/.dockerignore": "ignored\n", "ctx/ignored": "no",
                          "other.Dockerfile": "FROM busybox\nARG X\nRUN echo $X > /x\n"})
    ctx = str(tmp_path / "ctx")
    r = ketch("build", "-t", "cli:1", "-t", "cli:2", "--label", "a=b", ctx)
    assert "Successfully tagged cli:1" in r.stderr and "Successfully tagged cli:2" in r.stderr   # BuildKit: stderr
    assert _run(ketch, "cli:2") == "cli\n"
    assert image_config(ketchd, "cli:1")["config"]["Labels"] == {"a": "b"}
    # -f outside the context, --build-arg from the environment, -q and --iidfile
    iidfile = tmp_path / "iid"
    ketch.env["X"] = "from-env"
    try:
        r = ketch("build", "-q", "--iidfile", str(iidfile), "-f", str(tmp_path / "other.Dockerfile"),
                  "--build-arg", "X", "-t", "cli:3", ctx)
    finally:
        del ketch.env["X"]
    iid = r.stdout.strip()
    assert iid.startswith("sha256:") and iidfile.read_text() == iid
    assert _run(ketch, "cli:3", "cat", "/x") == "from-env\n"
    # the Dockerfile on stdin with no context
    r = ketch("build", "-t", "cli:4", "-", input="FROM busybox\nRUN echo stdin > /s\n")
    assert _run(ketch, "cli:4", "cat", "/s") == "stdin\n"
    # a failing RUN: its message and its exit code
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nRUN exit 7\n")
    r = ketch("build", ctx, check=False)
    assert r.returncode == 7
    assert 'ERROR: failed to solve: process "/bin/sh -c exit 7" did not complete successfully: exit code: 7' \
        in r.stderr
    # a Dockerfile error with its line
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nCOPY --nope a b\n")
    r = ketch("build", ctx, check=False)
    assert r.returncode == 1 and "dockerfile parse error on line 2: unknown flag: --nope" in r.stderr
    # what is not implemented is refused by name
    for flag in (["--cache-from", "type=local,src=/tmp"], ["--build-context", "a=git://example.com/a.git"]):
        r = ketch("build", *flag, ctx, check=False)
        assert r.returncode == 125 and flag[0] in r.stderr, (flag, r.stderr)
    r = ketch("build", "--platform", "linux/s390x", ctx, check=False)
    assert r.returncode == 1 and "linux/s390x" in r.stderr
    assert _containers(ketchd) == []


def test_ketch_build_from_a_tar(ketch, tmp_path):
    write_tree(tmp_path, {"c/Dockerfile": "FROM busybox\nCOPY f /f\n", "c/f": "tarred\n"})
    with tarfile.open(tmp_path / "c.tar", "w") as tf:
        for n in ("Dockerfile", "f"):
            tf.add(tmp_path / "c" / n, arcname=n)
    ketch("build", "-t", "fromtar:1", str(tmp_path / "c.tar"))
    assert _run(ketch, "fromtar:1", "cat", "/f") == "tarred\n"
    assert json.loads(ketch("image", "inspect", "fromtar:1").stdout)[0]["Id"].startswith("sha256:")
