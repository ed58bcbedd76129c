"""Capability sets applied in forked children; checked through /proc/self/status."""

import errno
import os

import pytest

from ketch.errors import InvalidArgument
from ketch.linux import capabilities as caps
from tests.linux.childproc import errno_of, exec_in_child, run_in_child

CHOWN_KILL = (1 << 0) | (1 << 5)
UID = 1000


def status_caps(text):
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in text.splitlines() if line.startswith("Cap"))}


def read_status():
    with open("/proc/self/status") as f:
        return f.read()


def test_table_and_parse():
    assert caps.CAPS["CAP_CHOWN"] == 0 and caps.CAPS["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(caps.CAPS) == 41
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert caps.last_cap() == int(f.read())
    assert caps.parse(["CAP_KILL", "CAP_CHOWN"]) == CHOWN_KILL
    assert caps.names(CHOWN_KILL) == ["CAP_CHOWN", "CAP_KILL"]
    assert caps.names(caps.parse(list(caps.CAPS))) == list(caps.CAPS)[: caps.last_cap() + 1]
    with pytest.raises(InvalidArgument, match="unknown capability 'CAP_FLY'"):
        caps.parse(["CAP_FLY"])
    with pytest.raises(InvalidArgument, match="unknown set"):
        caps.validate({"bounded": []})


def test_caps_above_last_cap_are_skipped_with_warning(monkeypatch, capsys):
    monkeypatch.setattr(caps, "_last_cap", 38)  # pretend an older kernel (5.8 added CAP_BPF)
    assert caps.parse(["CAP_CHOWN", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]) == 1
    assert "CAP_BPF, CAP_CHECKPOINT_RESTORE" in capsys.readouterr().err


def test_drop_all_but_chown_and_kill():
    spec = {k: ["CAP_CHOWN", "CAP_KILL"] for k in ("bounding", "effective", "permitted", "inheritable")}

    def child():
        caps.apply(spec)
        return status_caps(read_status())

    got = run_in_child(child)[0]
    assert got == {"CapInh": CHOWN_KILL, "CapPrm": CHOWN_KILL, "CapEff": CHOWN_KILL,
                   "CapBnd": CHOWN_KILL, "CapAmb": 0}


def test_empty_sets_drop_everything():
    def child():
        caps.apply({})
        return status_caps(read_status())

    got, _ = run_in_child(child)
    assert got == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


def _become_user(spec, keep=True):
    caps.drop_bounding(spec)
    caps.keep_caps_for_setuid(keep)
    os.setgroups([])
    os.setgid(UID)
    os.setuid(UID)
    caps.keep_caps_for_setuid(False)
    caps.set_process_caps(spec)


def test_ambient_caps_survive_setuid_and_exec(tmp_path):
    spec = {k: ["CAP_CHOWN", "CAP_KILL"] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    target = tmp_path / "owned-by-root"
    target.write_text("x")
    fd = os.open(target, os.O_RDONLY)
    try:
        def child():
            _become_user(spec)
            os.fchown(fd, UID, UID)  # needs CAP_CHOWN as uid 1000
            return [os.getuid(), status_caps(read_status())]

        uid, got = run_in_child(child)[0]
        assert uid == UID
        assert got["CapEff"] == got["CapPrm"] == got["CapAmb"] == CHOWN_KILL
        assert os.stat(target).st_uid == UID

        # after exec as a non-root user only the ambient set carries the capabilities over
        out, status = exec_in_child(lambda: _become_user(spec), ["/bin/cat", "/proc/self/status"])
        after = status_caps(out.decode())
        assert os.WEXITSTATUS(status) == 0
        assert after == {"CapInh": CHOWN_KILL, "CapPrm": CHOWN_KILL, "CapEff": CHOWN_KILL,
                         "CapBnd": CHOWN_KILL, "CapAmb": CHOWN_KILL}
        assert b"Uid:\t1000\t1000\t1000\t1000" in out
    finally:
        os.close(fd)


def test_without_keepcaps_setuid_loses_caps():
    spec = {k: ["CAP_CHOWN"] for k in ("bounding", "effective", "permitted")}

    def child():
        try:
            _become_user(spec, keep=False)
        except OSError as e:
            return [e.errno, str(e)]
        return None

    err, msg = run_in_child(child)[0]
    assert err == errno.EPERM and "capset" in msg


def test_bounding_drop_prevents_regaining_on_exec():
    def drop():
        caps.drop_bounding({"bounding": ["CAP_CHOWN", "CAP_KILL"]})
        # still root with a full permitted set here; exec recomputes permitted from the bounding set

    out, status = exec_in_child(drop, ["/bin/cat", "/proc/self/status"])
    after = status_caps(out.decode())
    assert after["CapBnd"] == after["CapPrm"] == after["CapEff"] == CHOWN_KILL

    def child():
        caps.drop_bounding({"bounding": ["CAP_CHOWN"]})
        # inheritable may not grow beyond the bounding set
        return errno_of(caps.set_process_caps, {"permitted": ["CAP_CHOWN", "CAP_KILL"],
                                                "inheritable": ["CAP_KILL"]})

    assert run_in_child(child)[0] == errno.EPERM


def test_ambient_not_inheritable_is_skipped_as_by_runc():
    """PR_CAP_AMBIENT_RAISE needs the capability permitted and inheritable; runc skips one that is
    not (its capability library ignores every ambient failure), and so does apply."""
    def child(inheritable):
        sets = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted", "ambient")}
        sets["inheritable"] = inheritable
        err = errno_of(caps.apply, sets)
        return err, status_caps(read_status())["CapAmb"]

    assert run_in_child(lambda: child([]))[0] == [0, 0]
    assert run_in_child(lambda: child(["CAP_KILL"]))[0] == [0, 1 << 5]
