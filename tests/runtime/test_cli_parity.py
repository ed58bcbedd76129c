"""runc's command line to the letter, checked against runc on the same bundles: error words other
tools parse, `state` and `list` output (key order, layout), --log/--log-format, signal 0, `ps --`."""

import json
import os
import re
import subprocess
import time

import pytest


def _msg(stderr):
    """The message without the runtime's framing: runc's logrus line, Ketch's `ketch-runtime: `."""
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', stderr)
    if m:
        return m.group(1).replace('\\"', '"')
    return stderr.strip().removeprefix("ketch-runtime: ")


@pytest.fixture
def pair(rt):
    """A running and an exited container under each runtime, with the same ids."""
    running, exited = rt.bundle(["sleep", "100"]), rt.bundle(["true"])
    calls = {"ketch": rt.rt, "runc": rt.runc}
    for name, run in calls.items():
        for b in (running, exited):
            b.cfg["linux"]["cgroupsPath"] = f"/{rt.cg_parent}/{name}-{b.id}"     # a cgroup each
            b.write()
            r = run("run", "-d", "--bundle", b.path, b.id, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, r.stderr
    deadline = time.time() + 10
    while time.time() < deadline and any(json.loads(run("state", exited.id).stdout)["status"] != "stopped"
                                         for run in calls.values()):
        time.sleep(0.02)
    yield calls, running, exited
    for run in calls.values():
        for b in (running, exited):
            run("delete", "--force", b.id)


def _same(calls, *args):
    out = {name: run(*args) for name, run in calls.items()}
    assert out["ketch"].returncode == out["runc"].returncode, out
    return out


def test_error_words(pair):
    calls, running, exited = pair
    for args, words in ((("kill", exited.id, "TERM"), "container not running"),
                        (("start", running.id), "cannot start an already running container"),
                        (("delete", running.id), f"cannot delete container {running.id} that is not stopped: running"),
                        (("--log-format", "xml", "state", running.id), "invalid log-format: xml"),
                        (("--log", "/nonexistent/dir/log", "state", running.id),
                         "open /nonexistent/dir/log: no such file or directory")):
        out = _same(calls, *args)
        for name, r in out.items():
            assert r.returncode != 0 and _msg(r.stderr) == words, (name, args, r.stderr)
    out = _same(calls, "kill", "nosuch")
    assert all("does not exist" in r.stderr for r in out.values())


def _normalized(text):
    """State output with what differs by nature (pids, times, spec version) blanked."""
    text = re.sub(r'"pid": ?\d+', '"pid":P', text)
    text = re.sub(r'"created": ?"[^"]*"', '"created":T', text)
    return re.sub(r'"ociVersion": ?"[^"]*"', '"ociVersion":V', text)


def test_state_and_list_json_as_runc_writes_them(pair):
    calls, running, exited = pair
    out = _same(calls, "state", running.id)
    assert _normalized(out["ketch"].stdout) == _normalized(out["runc"].stdout)
    assert list(json.loads(out["ketch"].stdout)) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs",
                                                     "created", "owner"]
    out = _same(calls, "list", "--format", "json")
    assert _normalized(out["ketch"].stdout) == _normalized(out["runc"].stdout)
    created = json.loads(out["ketch"].stdout)[0]["created"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z", created)      # Go's RFC3339Nano


def test_list_table_as_runcs_tabwriter(pair):
    calls, running, exited = pair
    out = _same(calls, "list")
    layout = {}
    for name, r in out.items():
        lines = r.stdout.splitlines()
        assert len(lines) == 3, (name, r.stdout)
        starts = [[m.start() for m in re.finditer(r"\S+", ln)] for ln in lines]
        assert starts[1] == starts[2] == starts[0], (name, r.stdout)     # every cell under its header
        # tabwriter's rule (minwidth 12, padding 3): a column is as wide as its widest cell plus three
        cells = [ln.split() for ln in lines]
        widths = [max(12, max(len(c[i]) for c in cells) + 3) for i in range(5)]
        assert starts[0] == [sum(widths[:i]) for i in range(6)], (name, r.stdout)
        layout[name] = lines[0].split()
    assert layout["ketch"] == layout["runc"] == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]


def test_signal_zero(pair):
    calls, running, exited = pair
    for args in (("kill", running.id, "0"), ("kill", "--all", running.id, "0")):
        out = _same(calls, *args)
        assert all(r.returncode == 0 for r in out.values()), out


def test_ps_passes_its_arguments_to_ps(rt):
    """`ps ID -- -e -x`: runc 1.1 hands ps the `--` too (procps refuses it); Ketch passes the rest."""
    b = rt.bundle(["sleep", "100"])
    rt.rt("run", "-d", "--bundle", b.path, b.id, check=True, stdin=subprocess.DEVNULL)
    try:
        r = rt.rt("ps", b.id, "--", "-e", "-x")
        assert r.returncode == 0, r.stderr
        head, *rows = r.stdout.splitlines()
        assert head.split()[:3] == ["PID", "TTY", "STAT"]
        assert len(rows) == 1 and "sleep 100" in rows[0] and "PATH=" in rows[0]      # -e: the environment
        assert int(rows[0].split()[0]) == rt.state(b.id)["pid"]
    finally:
        rt.rt("delete", "--force", b.id)


def test_log_file_json(rt):
    log = os.path.join(rt.tmp, "log.json")
    r = rt.rt("--log", log, "--log-format", "json", "kill", "nosuch")
    assert r.returncode != 0
    entry = json.loads(open(log).read().splitlines()[-1])
    assert entry["level"] == "error" and "does not exist" in entry["msg"] and "time" in entry


def test_update_flags_as_runc(pair, rt):
    """runc's spellings and sizes (50M, 1g, -1), on the same container under each runtime."""
    calls, running, exited = pair
    steps = (["--memory", "50M"], ["--memory", "1g", "--memory-swap", "-1"], ["--cpu-share", "512"],
             ["--pids-limit", "77"], ["--blkio-weight", "300"], ["--cpu-rt-period", "1000000"])
    seen = {}
    for name, run in calls.items():
        for args in steps:
            r = run("update", *args, running.id)
            assert r.returncode == 0, (name, args, r.stderr)
        r = run("update", "--memory", "12X", running.id)
        assert r.returncode != 0 and _msg(r.stderr) == "invalid value for memory: invalid size: '12X'", r.stderr
        base = f"/sys/fs/cgroup/%s/{rt.cg_parent}/{name}-{running.id}/"
        seen[name] = [open(base % c + f).read().strip() for c, f in
                      (("memory", "memory.limit_in_bytes"), ("cpu", "cpu.shares"), ("pids", "pids.max"),
                       ("cpu", "cpu.rt_period_us"))]
    assert seen["ketch"] == seen["runc"] == ["1073741824", "512", "77", "1000000"]


@pytest.mark.parametrize("rootless", [False, True])
def test_spec_as_runc_writes_it(rt, rootless):
    """Byte for byte but the spec version and the hostname; a second spec is refused in runc's words."""
    out = {}
    for name, run in (("ketch", rt.rt), ("runc", rt.runc)):
        d = os.path.join(rt.tmp, f"spec-{name}-{rootless}")
        os.makedirs(d)
        r = run("spec", "--bundle", d, *(["--rootless"] if rootless else []))
        assert r.returncode == 0, r.stderr
        out[name] = open(os.path.join(d, "config.json")).read()
        r = run("spec", "--bundle", d)
        assert r.returncode != 0 and _msg(r.stderr) == "File config.json exists. Remove it first", r.stderr
    norm = {k: re.sub(r'"(ociVersion|hostname)": "[^"]*"', r'"\1": X', v) for k, v in out.items()}
    assert norm["ketch"] == norm["runc"]


def test_exec_failures_exit_255_in_runcs_words(pair):
    calls, running, exited = pair
    for name, run in calls.items():
        r = run("exec", "--pid-file", "/nonexistent/dir/pid", running.id, "true", stdin=subprocess.DEVNULL)
        assert r.returncode == 255, (name, r.stderr)
        assert _msg(r.stderr) == "exec failed: open /nonexistent/dir/.pid: no such file or directory", r.stderr
        assert run("pause", running.id).returncode == 0
        try:
            r = run("exec", running.id, "true", stdin=subprocess.DEVNULL)
            assert r.returncode == 255, (name, r.stderr)
            assert _msg(r.stderr) == "exec failed: cannot exec in a paused container (use --ignore-paused to override)"
        finally:
            run("resume", running.id)
        r = run("exec", running.id, "sh", "-c", "exit 3", stdin=subprocess.DEVNULL)
        assert r.returncode == 3, (name, r.stderr)
    # the process of the failed --pid-file exec was not left behind
    out = calls["ketch"]("ps", "--format", "json", running.id).stdout
    assert len(json.loads(out)) == 1


def test_crun_options(rt):
    """crun's --cgroup-manager and run/create --config, so crun's users and tools can drive Ketch."""
    def m(c):      # no cgroup namespace: /proc/self/cgroup shows the host's path
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "cgroup"]
    b = rt.bundle(["sh", "-c", "cat /proc/self/cgroup | grep memory"], m)
    os.rename(os.path.join(b.path, "config.json"), os.path.join(b.path, "other.json"))
    r = rt.rt("--cgroup-manager", "cgroupfs", "run", "--bundle", b.path, "--config", "other.json", b.id)
    assert r.returncode == 0, r.stderr
    assert f"{rt.cg_parent}/{b.id}" in r.stdout
    r = rt.rt("--cgroup-manager", "disabled", "run", "--bundle", b.path, "--config", "other.json", b.id + "x")
    assert r.returncode == 0, r.stderr
    assert rt.cg_parent not in r.stdout and not os.path.exists(f"/sys/fs/cgroup/memory/{rt.cg_parent}/{b.id}x")
    r = rt.rt("--cgroup-manager", "nosuch", "run", "--bundle", b.path, b.id + "y")
    assert r.returncode != 0 and "unknown cgroup manager" in r.stderr


def test_debug_writes_debug_lines(rt):
    b = rt.bundle(["true"])
    for name, run in (("ketch", rt.rt), ("runc", rt.runc)):
        r = run("--debug", "run", "--bundle", b.path, b.id + name)
        assert r.returncode == 0, (name, r.stderr)
        lines = r.stderr.splitlines()
        assert lines and all(re.match(r'time="[^"]+" level=debug msg=', ln) for ln in lines), (name, lines)
    r = rt.rt("run", "--bundle", b.path, b.id + "quiet")
    assert r.returncode == 0 and r.stderr == ""
    log = os.path.join(rt.tmp, "debug.log")
    r = rt.rt("--debug", "--log", log, "--log-format", "json", "run", "--bundle", b.path, b.id + "log")
    assert r.returncode == 0 and r.stderr == ""
    assert any(json.loads(ln)["level"] == "debug" for ln in open(log))


def test_exec_into_sub_cgroups(pair, rt):
    """exec --cgroup [CONTROLLER[,CONTROLLER]:]PATH puts the process below the container's cgroup."""
    calls, running, exited = pair
    for name, run in calls.items():
        for c in ("memory", "pids"):
            os.makedirs(f"/sys/fs/cgroup/{c}/{rt.cg_parent}/{name}-{running.id}/sub")
        r = run("exec", "--cgroup", "memory,pids:sub", running.id, "cat", "/proc/self/cgroup",
                stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (name, r.stderr)
        lines = {ln.split(":")[1]: ln.split(":")[2] for ln in r.stdout.splitlines()}
        assert lines["memory"] == lines["pids"] == "/sub" and lines["cpu"] == "/", (name, r.stdout)
        for value, words in (("../..", "../.. is not a sub cgroup path"),
                             ("bogus:sub", "unknown controller bogus in SubCgroupPaths")):
            r = run("exec", "--cgroup", value, running.id, "true", stdin=subprocess.DEVNULL)
            msg = _msg(r.stderr)
            assert r.returncode == 255 and msg.startswith("exec failed: ") and msg.endswith(words), (name, msg)
        r = run("exec", "--cgroup", "nosuch", running.id, "true", stdin=subprocess.DEVNULL)
        assert r.returncode == 255 and "no such file or directory" in r.stderr, (name, r.stderr)
    assert len(json.loads(calls["ketch"]("ps", "--format", "json", running.id).stdout)) == 1


def _sections(text):
    """urfave/cli's headings: NAME:, USAGE:, OPTIONS:, ..."""
    return [ln[:-1] for ln in text.splitlines() if re.fullmatch(r"[A-Z][A-Z ]*:", ln)]


def _option_names(text):
    """The long options a help's OPTIONS section lists."""
    body = text.split("OPTIONS:\n", 1)[-1] if "OPTIONS:\n" in text else ""
    return {m.group(1) for m in re.finditer(r"^   (--[\w-]+)", body, re.M)}


@pytest.mark.parametrize("cmd", ["create", "run", "exec", "kill", "delete", "update", "events", "ps", "list", "spec"])
def test_help_in_runcs_shape(rt, cmd):
    out = {name: run(cmd, "-h") for name, run in (("ketch", rt.rt), ("runc", rt.runc))}
    for name, r in out.items():
        assert r.returncode == 0, (name, r.stderr)
    assert _sections(out["ketch"].stdout) == _sections(out["runc"].stdout)
    # every option runc lists, Ketch lists (runc's Intel RDT ones aside: no RDT here)
    missing = _option_names(out["runc"].stdout) - _option_names(out["ketch"].stdout) - {
        "--l3-cache-schema", "--mem-bw-schema", "--kernel-memory", "--kernel-memory-tcp"}
    assert not missing, missing
    assert rt.rt("help", cmd).stdout == out["ketch"].stdout


def test_main_help_in_runcs_shape(rt):
    out = {name: run("--help") for name, run in (("ketch", rt.rt), ("runc", rt.runc))}
    assert _sections(out["ketch"].stdout) == _sections(out["runc"].stdout)
    cmds = {name: set(re.findall(r"^   ([a-z]+)", r.stdout.split("COMMANDS:\n")[1].split("\n\n")[0], re.M))
            for name, r in out.items()}
    assert cmds["runc"] <= cmds["ketch"], cmds["runc"] - cmds["ketch"]
    r = rt.rt("help", "nosuch")
    assert r.returncode == 3 and "No help topic for 'nosuch'" in r.stderr


def _framed(text, runtime):
    """Output with what differs by nature blanked: times, pids, the program's name."""
    text = re.sub(r'time="[^"]*"', 'time=T', text)
    text = re.sub(r'"time":"[^"]*"', '"time":T', text)
    text = re.sub(r"\d+", "N", text) if "usage:" in text else text       # memory figures
    return text.replace(runtime, "RT").replace("ketch-runtime", "RT")


def test_errors_to_the_letter(pair, rt, tmp_path):
    """Every error a script can meet reads the same under both: exit status, the logrus line on
    stderr (text, or JSON with --log-format json), with --log the bare message on stderr and the
    line in the file, and a usage error's first line on stdout. Only the name differs."""
    calls, running, exited = pair
    nosuch = [["state", "nosuch"], ["kill", "nosuch"], ["delete", "nosuch"], ["start", "nosuch"],
              ["pause", "nosuch"], ["resume", "nosuch"], ["exec", "nosuch", "true"], ["ps", "nosuch"],
              ["events", "--stats", "nosuch"], ["update", "--memory", "50M", "nosuch"]]
    usage = [["state"], ["kill"], ["kill", running.id, "KILL", "x"], ["state", "a", "b"], ["list", "x"],
             ["frobnicate"], ["help", "frobnicate"], ["list", "--bogus"], ["--bogus", "list"],
             ["list", "--format"], ["--root"]]
    states = [["start", running.id], ["start", exited.id], ["kill", exited.id, "KILL"], ["pause", exited.id],
              ["resume", running.id], ["update", "--memory", "50M", exited.id], ["exec", exited.id, "true"],
              ["exec", running.id], ["ps", running.id, "-o", "comm"], ["ps", "--format", "xml", running.id],
              ["list", "--format", "xml"], ["kill", running.id, "FOO"], ["update", "--memory", "4k", running.id],
              ["delete", running.id], ["create", "--bundle", running.path, "bad/id"],
              ["create", "--bundle", str(tmp_path / "nonexistent"), "x"],
              ["create", "--bundle", running.path, running.id]]
    json_log = [["--log-format", "json"] + a for a in (["state", "nosuch"], ["kill", exited.id, "KILL"])]
    for args in nosuch + usage + states + json_log:
        out = {name: run(*args) for name, run in calls.items()}
        k, r = out["ketch"], out["runc"]
        assert k.returncode == r.returncode != 0, (args, k, r)
        ks, rs = _framed(k.stderr, "ketch-runtime"), _framed(r.stderr, "runc")
        if "4k" in args:                # runc also warns that its roll-back to the old limit failed
            ks, rs = ks.splitlines()[-1], rs.splitlines()[-1]
        assert ks == rs, (args, k.stderr, r.stderr)
        assert k.stdout.split("\n")[0] == r.stdout.split("\n")[0].replace("runc", "ketch-runtime"), (args, k.stdout)
    for name, run in calls.items():                      # --log: the line in the file, the bare words on stderr
        log = tmp_path / f"{name}.log"
        r = run("--log", str(log), "--log-format", "json", "kill", exited.id, "KILL")
        assert r.returncode == 1 and r.stderr == "container not running\n", (name, r.stderr)
        line = json.loads(log.read_text().splitlines()[-1])
        assert list(line) == ["level", "msg", "time"] and line["msg"] == "container not running", (name, line)
    # a created container pauses and resumes as under runc, its state saying so between
    b = rt.bundle(["true"])
    for name, run in calls.items():
        b.cfg["linux"]["cgroupsPath"] = f"/{rt.cg_parent}/{name}-{b.id}"
        b.write()
        assert run("create", "--bundle", b.path, b.id).returncode == 0
        assert run("pause", b.id).returncode == 0
        assert json.loads(run("state", b.id).stdout)["status"] == "paused", name
        assert _msg(run("start", b.id).stderr) == "cannot start a container in the paused state", name
        assert run("resume", b.id).returncode == 0
        assert json.loads(run("state", b.id).stdout)["status"] == "created", name
        run("delete", "--force", b.id)


def test_go_quoting_of_log_values():
    from ketch import logrus as log
    assert log.line("error", "container not running", t=0).endswith('level=error msg="container not running"')
    assert log.line("error", "plain", t=0).endswith("msg=plain")
    assert log.go_quote('a "b"\\\n\t\x01é') == '"a \\"b\\"\\\\\\n\\t\\x01é"'
    assert log.line("error", "<&>\b", "json", t=0).startswith('{"level":"error","msg":"\\u003c\\u0026\\u003e\\u0008",')
