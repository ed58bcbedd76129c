"""The Dockerfile language (ketch/build/dockerfile.py): directives, heredocs, typed instructions, errors
with line and column in BuildKit's words, expansion, stages and --target planning. Pure: no root, no daemon."""

import pytest

from ketch.build.dockerfile import (
    AddInstruction,
    ArgInstruction,
    CmdInstruction,
    CopyInstruction,
    DockerfileError,
    EntrypointInstruction,
    EnvInstruction,
    ExposeInstruction,
    HealthcheckInstruction,
    LabelInstruction,
    MaintainerInstruction,
    OnbuildInstruction,
    RunInstruction,
    ShellInstruction,
    StopSignalInstruction,
    UserInstruction,
    VolumeInstruction,
    WorkdirInstruction,
    go_duration,
    parse,
    parse_triggers,
    plan,
    predefined_args,
)


def one(text, cls=None):
    df = parse("FROM busybox\n" + text)
    inst = df.stages[0].instructions[0]
    if cls is not None:
        assert isinstance(inst, cls)
    return inst


def error(text):
    with pytest.raises(DockerfileError) as e:
        parse(text, file="ctx/Dockerfile")
    return e.value


# --- directives, comments, continuations ------------------------------------------------------

def test_directives_are_read_once_and_only_at_the_top():
    df = parse("# syntax=docker/dockerfile:1.7\n# check=skip=all\n# escape=`\nFROM a\nRUN echo `\n  hi\n")
    assert (df.syntax, df.check, df.escape) == ("docker/dockerfile:1.7", "skip=all", "`")
    assert df.stages[0].instructions[0].cmd == ["echo   hi"]
    # after a comment or an instruction it is only a comment
    df = parse("# hello\n# escape=`\nFROM a\nRUN echo \\\n hi\n")
    assert df.escape == "\\" and df.stages[0].instructions[0].cmd == ["echo  hi"]
    e = error("# escape=\\\n# escape=`\nFROM a\n")
    assert e.reason == "only one escape parser directive can be used" and e.line == 2
    assert "invalid escape token" in error("# escape=x\nFROM a\n").reason


def test_continuations_comments_and_empty_continuation_lines():
    df = parse("FROM a\nRUN apt-get update && \\\n# a comment inside\n\n    apt-get install -y x\n")
    run = df.stages[0].instructions[0]
    assert run.cmd == ["apt-get update &&     apt-get install -y x"] and (run.line, run.end_line) == (2, 5)
    assert len(df.warnings) == 1 and df.warnings[0].message.startswith("Empty continuation line found in: RUN")
    assert parse("FROM a\nRUN echo \\\n").stages[0].instructions[0].cmd == ["echo"]   # continuation at EOF
    assert parse("\ufeffFROM a\n").stages[0].base == "a"


def test_empty_and_comment_only_files_are_refused():
    assert error("").reason == "file with no instructions"
    assert error("# nothing\n\n").reason == "file with no instructions"
    assert error("ARG X\n").reason == "no build stage in current context"
    e = error("RUN true\nFROM a\n")
    assert e.reason == "no build stage in current context" and e.line == 1


# --- heredocs -----------------------------------------------------------------------------------

def test_run_heredoc_forms():
    df = parse("FROM a\nRUN <<EOF\necho one\necho two\nEOF\nRUN <<-EOT bash\n\techo tab\n\tEOT\n"
               "RUN <<A cat > /a && <<B cat > /b\nfirst\nA\nsecond\nB\nRUN 3<<X cat <&3\nthree\nX\n")
    r1, r2, r3, r4 = df.stages[0].instructions
    assert r1.heredocs[0].content == "echo one\necho two\n" and r1.script() == ["echo one\necho two\n"]
    assert r2.heredocs[0].chomp and r2.heredocs[0].text == "echo tab\n"
    assert r2.script() == ["<<-EOT bash\n\techo tab\nEOT"]           # the shell strips the tabs itself
    assert [h.name for h in r3.heredocs] == ["A", "B"] and (r3.line, r3.end_line) == (9, 13)
    assert r3.script() == ["<<A cat > /a && <<B cat > /b\nfirst\nA\nsecond\nB"]
    assert r4.heredocs[0].fd == 3


def test_heredoc_shebang_is_run_as_a_file():
    run = one("RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n", RunInstruction)
    assert run.heredoc_file() is not None and run.heredoc_file().name == "EOF"


def test_copy_heredocs_and_quoted_delimiters_turn_off_expansion():
    c = one('COPY <<one.txt <<"two.txt" /dst/\n$HOME\none.txt\n$HOME\ntwo.txt\n', CopyInstruction)
    assert [(s.path, s.data, s.expand) for s in c.contents] == [("one.txt", "$HOME\n", True),
                                                                  ("two.txt", "$HOME\n", False)]
    assert c.sources == [] and c.dest == "/dst/"
    ex = c.expand({"HOME": "/root"})
    assert [s.data for s in ex.contents] == ["/root\n", "$HOME\n"]
    assert one("COPY <<'E'x /f\nbody\nE'x'\n".replace("E'x'\n", "Ex\n"), CopyInstruction).contents[0].expand is False
    assert one("COPY <<-E /f\n\t\tindented\n\tE\n", CopyInstruction).contents[0].data == "indented\n"


def test_heredoc_errors_and_json_forms_without_heredocs():
    e = error("FROM a\nRUN <<EOF\necho\n")
    assert e.reason == "unterminated heredoc" and e.start_line == 2
    assert error("FROM a\nCOPY a <<EOF\nx\nEOF\n").reason == "COPY cannot accept a heredoc as a destination"
    run = one('RUN ["sh", "-c", "cat <<EOF"]\n', RunInstruction)
    assert run.heredocs == [] and not run.prepend_shell


# --- instructions -------------------------------------------------------------------------------

def test_from_forms():
    df = parse("ARG V=3\nFROM --platform=$BUILDPLATFORM golang:${V} AS Build\nFROM scratch\nFROM build\n")
    s0, s1, s2 = df.stages
    assert (s0.name, s0.base, s0.from_.platform) == ("build", "golang:${V}", "$BUILDPLATFORM")
    assert s1.name == "" and s1.label == "stage-1" and s2.base == "build"
    assert isinstance(df.global_args[0], ArgInstruction) and df.global_args[0].args[0].value == "3"
    assert error("FROM a AS 1bad\n").reason.startswith('invalid name for build stage: "1bad"')
    assert error("FROM a b\n").reason == "FROM requires either one or three arguments"
    assert error("FROM --platfrom=x a\n").reason == "unknown flag: --platfrom (did you mean platform?)"
    assert error("FROM --plat=x a\n").reason == "unknown flag: --plat"


def test_run_shell_and_exec_forms_network_and_mounts():
    r = one('RUN ["/bin/echo", "hi there"]', RunInstruction)
    assert r.cmd == ["/bin/echo", "hi there"] and not r.prepend_shell
    r = one("RUN --network=none --mount=type=cache,target=/root/.cache,id=pip,sharing=private,uid=1000,gid=1000,"
            "mode=0700 --mount=type=bind,from=build,source=/out,target=/in,rw --mount=type=tmpfs,target=/t,size=64m "
            "--mount=type=secret,id=tok,target=/run/secrets/tok,required=true pip install x", RunInstruction)
    assert r.network == "none" and r.cmd == ["pip install x"]
    cache, bind, tmpfs, secret = r.mounts
    assert (cache.type, cache.target, cache.cache_id, cache.sharing, cache.uid, cache.gid, cache.mode,
            cache.readonly) == ("cache", "/root/.cache", "pip", "private", 1000, 1000, 0o700, False)
    assert (bind.from_, bind.source, bind.target, bind.readonly) == ("build", "/out", "/in", False)
    assert (tmpfs.type, tmpfs.size_limit, tmpfs.readonly) == ("tmpfs", 64 << 20, False)
    assert (secret.type, secret.cache_id, secret.required, secret.readonly) == ("secret", "tok", True, True)
    assert one("RUN --mount=target=/src make", RunInstruction).mounts[0].readonly is True   # bind: read-only


@pytest.mark.parametrize("flag, reason", [
    ("--network=bridge", 'invalid network mode "bridge"'),
    ("--mount=type=cach,target=/c", 'unsupported mount type "cach" (did you mean cache?)'),
    ("--mount=type=cache,target=/c,sharing=all", 'unsupported sharing value "all"'),
    ("--mount=type=bind,target=/c,sharing=locked", "invalid cache sharing set for bind mount"),
    ("--mount=type=bind,target=/c,uid=1", 'uid not allowed for "bind" type mounts'),
    ("--mount=type=tmpfs,target=/c,size=lots", "invalid value for size: lots"),
    ("--mount=type=cache,target=/c,size=1m", "unexpected key 'size' for mount type 'cache'"),
    ("--mount=type=cache,target=/c,mode=9", "invalid value 9 for mode"),
    ("--mount=type=cache,target=/c,color=red", "unexpected key 'color' in 'color=red'"),
    ("--mount=type=cache,tagret=/c", "unexpected key 'tagret' in 'tagret=/c' (did you mean target?)"),
    ("--mount=type=secret,id=a,src=b", "both source and id can't be set"),
    ("--mount=type=secret,from=x,id=a", "secret mount should not have a from"),
    ("--mount=type=bind,target=/c,required", "unexpected key 'required' for mount type 'bind'"),
    ("--mount=type=bind,target", "invalid field 'target' must be a key=value pair"),
    ("--mount=type=bind,from=$X,target=/c", "'from' doesn't support variable expansion, define alias stage instead"),
    ("--networks=none", "unknown flag: --networks (did you mean network?)"),
    ("--network", "missing a value on flag: --network"),
    ("--network=none --network=host", "duplicate flag specified: --network"),
])
def test_run_flag_errors_with_line_and_column(flag, reason):
    e = error(f"FROM a\n\nRUN {flag} true\n")
    assert e.reason == reason
    assert str(e) == f"dockerfile parse error on line 3: {reason}"
    # the column points at the flag, or at the --mount field at fault
    assert e.line == 3 and e.column >= 5 and e.file == "ctx/Dockerfile" and e.where == f"ctx/Dockerfile:3:{e.column}"


def test_mount_values_with_variables_are_checked_when_expanded():
    r = one("RUN --mount=type=$T,target=$D true", RunInstruction)
    assert r.expand({"T": "cache", "D": "/c"}).mounts[0].type == "cache"
    with pytest.raises(DockerfileError, match='unsupported mount type "nope"'):
        r.expand({"T": "nope", "D": "/c"})


def test_cmd_entrypoint_shell():
    assert one('CMD ["a", "b"]', CmdInstruction).cmd == ["a", "b"]
    c = one("CMD echo $HOME", CmdInstruction)
    assert c.cmd == ["echo $HOME"] and c.prepend_shell and c.expand({"HOME": "/x"}).cmd == ["echo $HOME"]
    assert one('ENTRYPOINT []', EntrypointInstruction).cmd == []
    assert one('CMD ["a", ', CmdInstruction).cmd == ['["a",']        # not JSON: the shell form
    assert error('FROM a\nCMD ["a", 1]\n').reason == ("when using JSON array syntax, arrays must be comprised "
                                                      "of strings only")
    assert one('SHELL ["/bin/bash", "-o", "pipefail", "-c"]', ShellInstruction).shell[0] == "/bin/bash"
    assert error("FROM a\nSHELL bash -c\n").reason == "SHELL requires the arguments to be in JSON form"


def test_env_label_arg_forms():
    e = one('ENV A=1 B="two words" C=${A}x', EnvInstruction)
    assert [(p.key, p.value) for p in e.expand({"A": "1"}).pairs] == [("A", "1"), ("B", "two words"), ("C", "1x")]
    old = one("ENV NAME the old form", EnvInstruction)
    assert old.pairs[0].key == "NAME" and old.pairs[0].value == "the old form" and old.pairs[0].no_delim
    lab = one('LABEL org.opencontainers.image.title="Ketch app" version=1', LabelInstruction)
    assert [(p.key, p.value) for p in lab.expand({}).pairs] == [("org.opencontainers.image.title", "Ketch app"),
                                                                 ("version", "1")]
    a = one("ARG NAME VER=1.2 EMPTY=", ArgInstruction)
    assert [(x.key, x.value) for x in a.args] == [("NAME", None), ("VER", "1.2"), ("EMPTY", "")]
    assert error("FROM a\nENV A=1 B\n").reason == ('Syntax error - can\'t find = in "B". Must be of the form: '
                                                   'name=value')
    assert error("FROM a\nENV ONLY\n").reason == "ENV must have two arguments"
    assert error("FROM a\nENV\n").reason == "ENV requires at least one argument"
    assert error("FROM a\nARG =x\n").reason == "ARG names can not be blank"


def test_copy_add_flags():
    c = one("COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=tests "
            "src/ lib/ /app/", CopyInstruction)
    assert (c.from_, c.chown, c.chmod, c.link, c.parents, c.excludes, c.sources, c.dest) == (
        "build", "app:app", "0755", True, True, ["*.md", "tests"], ["src/", "lib/"], "/app/")
    j = one('COPY ["a b", "/dst dir/"]', CopyInstruction)
    assert j.sources == ["a b"] and j.dest == "/dst dir/"
    a = one("ADD --checksum=sha256:abc --keep-git-dir=false --unpack https://x/y.tgz /opt/", AddInstruction)
    assert a.checksum == "sha256:abc" and a.keep_git_dir is False and a.unpack is True
    assert one("ADD x /y", AddInstruction).unpack is None
    cp = one("COPY --chown=$U:$G $SRC ${DST:-/d}", CopyInstruction).expand({"U": "1", "G": "2", "SRC": "s"})
    assert (cp.chown, cp.sources, cp.dest) == ("1:2", ["s"], "/d")
    assert error("FROM a\nCOPY only\n").reason == ("COPY requires at least two arguments, but only one was "
                                                   "provided. Destination could not be determined")
    assert error("FROM a\nCOPY --chmod=64a a b\n").reason == ("invalid chmod parameter: '64a'. it should be octal "
                                                              "string and between 0 and 07777")
    assert "variable expansion is not supported for --from" in error("FROM a\nCOPY --from=$S a b\n").reason
    assert error("FROM a\nCOPY --from=x --parent a b\n").reason == "unknown flag: --parent (did you mean parents?)"
    assert error("FROM a\nADD --from=x a b\n").reason.startswith("unknown flag: --from")
    assert error("FROM a\nCOPY --link=maybe a b\n").reason == "expecting boolean value for flag --link, not: maybe"


def test_the_other_instructions():
    assert one("WORKDIR $HOME/app", WorkdirInstruction).expand({"HOME": "/h"}).path == "/h/app"
    assert one("USER ${U:-app}:grp", UserInstruction).expand({}).user == "app:grp"
    assert one('VOLUME ["/data", "/logs"]', VolumeInstruction).volumes == ["/data", "/logs"]
    assert one("VOLUME /data $LOGS", VolumeInstruction).expand({"LOGS": "/l"}).volumes == ["/data", "/l"]
    assert one("STOPSIGNAL SIG$S", StopSignalInstruction).expand({"S": "TERM"}).signal == "SIGTERM"
    ex = one("EXPOSE $PORTS 80", ExposeInstruction).expand({"PORTS": "443 53/udp"})
    assert ex.ports == ["443", "53/udp", "80"]
    assert one("MAINTAINER Jane <jane@example.com>", MaintainerInstruction).maintainer == "Jane <jane@example.com>"
    for text, reason in [("WORKDIR", "WORKDIR requires exactly one argument"),
                         ("EXPOSE", "EXPOSE requires at least one argument"),
                         ("VOLUME []", "VOLUME requires at least one argument"),
                         ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument")]:
        assert error(f"FROM a\n{text}\n").reason == reason


def test_healthcheck():
    h = one("HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=500ms --retries=3 "
            "CMD curl -f http://localhost/ || exit 1", HealthcheckInstruction)
    assert h.test == ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    assert (h.interval, h.timeout, h.start_period, h.start_interval, h.retries) == (
        30 * 10**9, 3 * 10**9, 60 * 10**9, 5 * 10**8, 3)
    assert one('HEALTHCHECK CMD ["/bin/check", "-q"]', HealthcheckInstruction).test == ["CMD", "/bin/check", "-q"]
    assert one("HEALTHCHECK NONE", HealthcheckInstruction).test == ["NONE"]
    assert error("FROM a\nHEALTHCHECK NONE x\n").reason == "HEALTHCHECK NONE takes no arguments"
    assert error("FROM a\nHEALTHCHECK RUN x\n").reason == 'Unknown type "RUN" in HEALTHCHECK (try CMD)'
    assert error("FROM a\nHEALTHCHECK CMD\n").reason == "Missing command after HEALTHCHECK CMD"
    assert error("FROM a\nHEALTHCHECK --interval=1us CMD x\n").reason == ('Interval "interval" cannot be less '
                                                                          'than 1ms')
    assert error("FROM a\nHEALTHCHECK --retries=-1 CMD x\n").reason == "--retries cannot be negative (-1)"
    assert error("FROM a\nHEALTHCHECK --timeout=5 CMD x\n").reason == 'time: missing unit in duration "5"'
    assert error("FROM a\nHEALTHCHECK --timeout=abc CMD x\n").reason == 'time: invalid duration "abc"'
    assert go_duration("1h2m3.5s") == 3723500000000 and go_duration("0") == 0


def test_onbuild():
    o = one("ONBUILD COPY --chown=1 . /app", OnbuildInstruction)
    assert o.expression == "COPY --chown=1 . /app" and isinstance(o.trigger, CopyInstruction)
    assert o.trigger.column == 9
    h = one("ONBUILD RUN <<EOF\necho hi\nEOF\n", OnbuildInstruction)
    assert h.expression == "RUN <<EOF\necho hi\nEOF" and h.trigger.heredocs[0].content == "echo hi\n"
    assert error("FROM a\nONBUILD ONBUILD RUN x\n").reason == "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    assert error("FROM a\nONBUILD FROM x\n").reason == "FROM isn't allowed as an ONBUILD trigger"
    e = error("FROM a\nONBUILD RUN --bad true\n")
    assert e.reason == "unknown flag: --bad" and e.column == 13
    assert isinstance(parse_triggers(["RUN echo hi", "ENV A=b"])[1], EnvInstruction)


def test_unknown_instructions_with_suggestions_line_and_column():
    e = error("FROM a\nRUN true\nFORM b\n")
    assert str(e) == "dockerfile parse error on line 3: unknown instruction: FORM (did you mean FROM?)"
    assert (e.line, e.column) == (3, 1)
    e = error("FROM a\n    cpoy a b\n")
    assert e.reason == "unknown instruction: cpoy (did you mean copy?)" and (e.line, e.column) == (2, 5)
    assert error("FROM a\nFROBNICATE x\n").reason == "unknown instruction: FROBNICATE"
    e = error("FROM a\nRUN echo \\\n  one \\\n  --bad\nCOPY --chown a b\n")
    assert e.reason == "missing a value on flag: --chown" and (e.line, e.column) == (5, 6)


# --- stages, args, planning ---------------------------------------------------------------------

GO = """\
# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build
ARG TARGETOS TARGETARCH
WORKDIR /src
RUN --mount=type=cache,target=/go/pkg/mod \\
    --mount=type=bind,source=go.sum,target=go.sum \\
    --mount=type=bind,source=go.mod,target=go.mod \\
    go mod download -x
RUN --mount=type=cache,target=/go/pkg/mod \\
    --mount=type=bind,target=. \\
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /bin/server ./cmd/server

FROM build AS test
RUN go test ./...

FROM alpine:3.19 AS final
RUN --mount=type=cache,target=/var/cache/apk \\
    apk --update add ca-certificates tzdata && update-ca-certificates
ARG UID=10001
RUN adduser --disabled-password --gecos "" --uid "${UID}" appuser
USER appuser
COPY --from=build /bin/server /bin/
EXPOSE 8000
ENTRYPOINT [ "/bin/server" ]
"""

NODE = """\
FROM node:20-alpine AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev

FROM node:20-alpine AS builder
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY . .
RUN npm run build

FROM node:20-alpine AS runner
ENV NODE_ENV=production
COPY --from=builder --chown=node:node /app/.next ./.next
COPY --from=deps /app/node_modules ./node_modules
USER node
CMD ["node", "server.js"]
"""

PYTHON = """\
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1
WORKDIR /app

FROM base AS wheels
RUN --mount=type=cache,target=/root/.cache/pip \\
    --mount=type=bind,source=requirements.txt,target=requirements.txt \\
    pip wheel -r requirements.txt -w /wheels

FROM base
COPY --from=wheels /wheels /wheels
RUN pip install --no-index /wheels/*
COPY <<EOF /app/entry.sh
#!/bin/sh
exec python -m app "\\$@"
EOF
HEALTHCHECK --interval=10s CMD python -c "import urllib.request as u; u.urlopen('http://localhost:8000')"
CMD ["/bin/sh", "/app/entry.sh"]
"""


def test_real_world_go_multistage():
    df = parse(GO)
    assert [s.label for s in df.stages] == ["build", "test", "final"]
    p = plan(df, predefined=predefined_args("linux/arm64/v8", "linux/amd64"))
    assert p.stages[0].base_image == "golang:1.22-alpine" and p.stages[0].platform == "linux/amd64"
    assert p.stages[1].base_stage == 0 and p.target == 2 and p.order == [0, 2]      # test is not needed
    assert plan(df, target="test").order == [0, 1]
    assert "GO_VERSION" in p.used_args and "BUILDPLATFORM" in p.used_args
    mounts = df.stages[0].instructions[2].mounts
    assert [m.type for m in mounts] == ["cache", "bind", "bind"] and mounts[1].source == "go.sum"


def test_real_world_node_multistage_waves():
    p = plan(parse(NODE))
    assert p.order == [0, 1, 2] and p.stages[2].needs == {0, 1}
    assert p.independent() == [[0], [1], [2]]


def test_real_world_python_multistage():
    df = parse(PYTHON)
    p = plan(df, build_args={"PYTHON_VERSION": "3.11"})
    assert p.stages[0].base_image == "python:3.11-slim" and p.stages[1].base_stage == 0
    assert p.order == [0, 1, 2]
    copy = df.stages[2].instructions[2]
    assert copy.contents[0].data.startswith("#!/bin/sh\nexec python")
    env = df.stages[0].instructions[0]
    assert [p.key for p in env.pairs] == ["PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"]


def test_independent_stages_are_one_wave_and_images_are_named():
    df = parse("FROM a AS one\nFROM b AS two\nFROM c\nCOPY --from=one /x /x\nCOPY --from=two /y /y\n"
               "COPY --from=nginx:latest /etc/nginx /etc/nginx\nRUN --mount=from=1,target=/m true\n")
    p = plan(df)
    assert p.independent() == [[0, 1], [2]] and p.stages[2].images == {"nginx:latest"}


def test_global_args_build_args_and_predefined():
    df = parse("ARG A=1\nARG B=${A}2\nARG C\nFROM img:$B$C AS x\n")
    assert plan(df).stages[0].base_image == "img:12"
    assert plan(df, build_args={"A": "9", "C": "-c"}).stages[0].base_image == "img:92-c"
    assert plan(df, build_args={"B": "b"}).stages[0].base_image == "img:b"
    pre = predefined_args("linux/arm/v7", "linux/amd64", "x")
    assert (pre["TARGETOS"], pre["TARGETARCH"], pre["TARGETVARIANT"], pre["BUILDARCH"], pre["TARGETSTAGE"]) == (
        "linux", "arm", "v7", "amd64", "x")
    df = parse("FROM --platform=$TARGETPLATFORM busybox\n")
    assert plan(df, build_args={"TARGETPLATFORM": "linux/s390x"}).stages[0].platform == "linux/s390x"


def test_stage_graph_errors():
    e = pytest.raises(DockerfileError, plan, parse("FROM a\nFROM b\nFROM ${NOPE}\n")).value
    assert e.reason == "base name (${NOPE}) should not be blank" and e.line == 3
    e = pytest.raises(DockerfileError, plan, parse("FROM a AS x\nCOPY --from=y /a /a\nFROM b AS y\n"
                                                   "COPY --from=x /a /a\n")).value
    assert e.reason == "circular dependency detected on stage: x"
    e = pytest.raises(DockerfileError, plan, parse("FROM a AS x\nCOPY --from=y /a /a\nFROM b AS y\nFROM c\n"
                                                   "COPY --from=x /a /a\n")).value
    assert e.reason == 'cannot copy from stage "y", it needs to be defined before current stage "x"'
    assert pytest.raises(DockerfileError, plan, parse("FROM a\nCOPY --from=5 /a /a\n")).value.reason == (
        "invalid stage index 5")
    e = pytest.raises(DockerfileError, plan, parse("FROM a AS build\nFROM b\n"), target="buidl").value
    assert e.reason == 'target stage "buidl" could not be found (did you mean build?)'
    assert plan(parse("FROM a AS Build\nFROM b\n"), target="BUILD").order == [0]
