"""The `ketch` CLI without a daemon: no abbreviated flags, --version, help CMD, docker's grouped
help, completion scripts and man pages generated from the parser, and a lean `ketch ps`."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=REPO, COLUMNS="100")
ENV.pop("KETCH_HOST", None)


def ketch(*args, check=False):
    return subprocess.run([sys.executable, "-m", "ketch.cli.main", "-H", "unix:///nonexistent/k.sock", *args],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60, check=check)


def test_abbreviated_long_flags_are_refused_and_pid_is_its_own_flag():
    from ketch.cli.main import build_parser
    from ketch.cli.runopts import create_body
    r = ketch("run", "--priv", "busybox", "true")
    assert r.returncode == 125 and "unknown flag: --priv" in r.stderr and "See 'ketch run --help'." in r.stderr
    args = build_parser("run").parse_args(["run", "--pid", "host", "busybox"])
    hc = create_body(args, True)["HostConfig"]
    assert hc["PidMode"] == "host" and "PidsLimit" not in hc
    for argv in (["images", "--dig"], ["ps", "--no-tr"], ["system", "check", "--rep"], ["container", "ls", "--al"]):
        assert ketch(*argv).returncode != 0, argv


def test_new_flags_map_to_dockers_hostconfig():
    from ketch.cli.main import build_parser
    from ketch.cli.runopts import create_body
    args = build_parser("create").parse_args(
        ["create", "--add-host", "a:1.2.3.4", "--add-host", "b=::1", "--dns", "8.8.8.8", "--dns-search", "ex.com",
         "--dns-option", "ndots:2", "--shm-size", "1.5g", "--sysctl", "net.core.somaxconn=1024", "--ipc", "shareable",
         "--uts", "host", "--device", "/dev/fuse", "--device", "/dev/sda:r", "--device-cgroup-rule", "c 1:3 rwm",
         "--group-add", "audio", "busybox"])
    hc = create_body(args, False)["HostConfig"]
    assert hc["ExtraHosts"] == ["a:1.2.3.4", "b:::1"] and hc["Dns"] == ["8.8.8.8"] and hc["DnsSearch"] == ["ex.com"]
    assert hc["DnsOptions"] == ["ndots:2"] and hc["ShmSize"] == 1610612736
    assert hc["Sysctls"] == {"net.core.somaxconn": "1024"} and (hc["IpcMode"], hc["UTSMode"]) == ("shareable", "host")
    assert hc["Devices"] == [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"},
                             {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "r"}]
    assert hc["DeviceCgroupRules"] == ["c 1:3 rwm"] and hc["GroupAdd"] == ["audio"]
    for flags, text in ((["--uts", "container:x"], "--uts: invalid UTS mode"),
                        (["--ipc", "bad"], "--ipc: invalid IPC mode"),
                        (["--dns-search=a..b"], "a..b is not a valid domain")):
        r = ketch("create", *flags, "busybox")
        assert r.returncode == 125 and text in r.stderr, (flags, r.stderr)


def test_version_flag_and_help_command():
    import ketch as k
    for flag in ("--version", "-v"):
        r = ketch(flag)
        assert r.returncode == 0 and r.stdout == f"Ketch version {k.__version__}\n"
    assert ketch("help", "run").stdout == ketch("run", "--help").stdout != ""
    assert ketch("help", "container", "ls").stdout == ketch("container", "ls", "--help").stdout != ""
    r = ketch("version")   # no daemon: the client half, then the error
    assert "Client:" in r.stdout and " Version:" in r.stdout and r.returncode == 1


def test_top_level_help_is_grouped_as_dockers():
    out = ketch("help").stdout
    assert out == ketch("--help").stdout
    lines = out.splitlines()
    m, c, g = lines.index("Management Commands:"), lines.index("Commands:"), lines.index("Global Options:")
    assert m < c < g
    management = [ln.split()[0] for ln in lines[m + 1:c] if ln.strip()]
    assert management == ["container", "image", "network", "system", "volume"]
    cmds = [ln.split()[0] for ln in lines[c + 1:g] if ln.strip()]
    assert cmds == sorted(cmds) and {"run", "ps", "completion", "help", "version"} <= set(cmds)
    assert "container" not in cmds and "network" not in cmds and "port" in cmds


def _complete(script, *words):
    line = " ".join(f"'{w}'" for w in words)
    r = subprocess.run(["bash", "-c", f'source "$1"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _ketch; '
                        'printf "%s\\n" "${COMPREPLY[@]}"', "bash", script], capture_output=True, text=True, check=True)
    assert r.stderr == ""
    return r.stdout.split()


def test_bash_completion_from_the_parser(tmp_path):
    r = ketch("completion", "bash", check=True)
    script = tmp_path / "ketch.bash"
    script.write_text(r.stdout)
    assert _complete(script, "ketch", "ru") == ["run"]
    assert "--network" in _complete(script, "ketch", "run", "--net")
    assert _complete(script, "ketch", "-H", "unix:///x", "container", "l") == ["list", "logs", "ls"]
    assert _complete(script, "ketch", "system", "") == ["check", "df", "events", "info", "prune"]
    assert _complete(script, "ketch", "network", "") == ["connect", "create", "disconnect", "inspect", "ls",
                                                         "prune", "rm"]
    assert "--subnet" in _complete(script, "ketch", "network", "create", "--sub")
    assert "--publish-all" in _complete(script, "ketch", "run", "--publish")
    assert "--device-cgroup-rule" in _complete(script, "ketch", "create", "--dev")
    assert "--priv" not in _complete(script, "ketch", "run", "--pri")  # only whole flags


def test_zsh_completion_script():
    out = ketch("completion", "zsh", check=True).stdout
    assert out.startswith("#compdef ketch\n") and "_ketch()" in out and "--network" in out
    if shutil.which("zsh"):
        subprocess.run(["zsh", "-n"], input=out, text=True, check=True)
    assert ketch("completion", "fish").returncode == 2


def test_man_pages_from_the_parser(tmp_path):
    subprocess.run([sys.executable, "-m", "ketch.cli.manpage", str(tmp_path)], env=ENV, cwd=REPO, check=True,
                   capture_output=True)
    pages = set(os.listdir(tmp_path))
    assert {"ketch.1", "ketch-run.1", "ketch-container-ls.1", "ketch-system-check.1", "ketch-image-pull.1",
            "ketch-network-create.1", "ketch-network-connect.1", "ketch-port.1"} <= pages
    run = (tmp_path / "ketch-run.1").read_text()
    assert run.startswith('.TH "KETCH-RUN" "1"') and ".SH OPTIONS" in run
    assert "\\fB\\-\\-add\\-host\\fR" in run and "\\fB\\-\\-device\\-cgroup\\-rule\\fR" in run
    top = (tmp_path / "ketch.1").read_text()
    assert ".SH COMMANDS" in top and "ketch\\-container" in top
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", str(tmp_path / "ketch-run.1")], capture_output=True, text=True,
                           env=dict(ENV, MANPAGER="cat", PAGER="cat"))
        assert "--shm-size" in r.stdout.replace("‐", "-")


@pytest.mark.parametrize("argv", [["ps"], ["ps", "--format", "{{.ID}}"], ["images"]])
def test_hot_path_imports_no_template_completion_or_man_code(argv):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "ketch.cli.main", "-H", "unix:///nonexistent/k.sock",
                        *argv], capture_output=True, text=True, env=ENV, cwd=REPO)
    assert "Cannot connect" in r.stderr
    mods = {ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert not mods & {"ketch.cli.gotemplate", "ketch.cli.completion", "ketch.cli.manpage", "ketch.cli.parsertree",
                       "ketch.cli.networks", "ketch.cli.netopts"}
    assert "ketch.client" in mods and "ketch.cli.format" in mods    # it did run the command
