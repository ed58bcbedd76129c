"""Device rules: v1 writes, the v1-semantics emulator, the eBPF program and its loading."""

import struct

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime.cgroups import devices as dv

CHAR, BLOCK = dv.BPF_DEVCG_DEV_CHAR, dv.BPF_DEVCG_DEV_BLOCK
R, W, M = dv.BPF_DEVCG_ACC_READ, dv.BPF_DEVCG_ACC_WRITE, dv.BPF_DEVCG_ACC_MKNOD

# runc's default allow-list shape: deny all, then a few devices
RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},     # /dev/null
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},               # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rw"},      # /dev/tty, no mknod
    {"allow": True, "type": "b", "access": "m"},                              # mknod any block device
]


def test_v1_writes_deny_all_first_then_in_order():
    assert dv.v1_writes(RULES) == [
        ("devices.deny", "a"),
        ("devices.deny", "a *:* rwm"),
        ("devices.allow", "c 1:3 rwm"),
        ("devices.allow", "c 136:* rwm"),
        ("devices.allow", "c 5:0 rw"),
        ("devices.allow", "b *:* m"),
    ]


def test_program_prologue_and_shape():
    p = dv.program(RULES)
    # r2 = type, r3 = access, r4 = major, r5 = minor (struct bpf_cgroup_dev_ctx)
    assert p[:6] == [(0x61, 2, 1, 0, 0), (0x54, 2, 0, 0, 0xFFFF), (0x61, 3, 1, 0, 0), (0x74, 3, 0, 0, 16),
                     (0x61, 4, 1, 4, 0), (0x61, 5, 1, 8, 0)]
    # the c 1:3 rwm block: type, major, minor checks, no access check; each jump lands on the next block
    assert p[6:11] == [(0x55, 2, 0, 4, CHAR), (0x55, 4, 0, 3, 1), (0x55, 5, 0, 2, 3), (0xb4, 0, 0, 0, 1),
                       (0x95, 0, 0, 0, 0)]
    # c 136:* rwm: no minor check
    assert p[11:15] == [(0x55, 2, 0, 3, CHAR), (0x55, 4, 0, 2, 136), (0xb4, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]
    # c 5:0 rw: access check via r1 = r3 & (r|w); if r1 != r3 skip
    assert p[15:23] == [(0x55, 2, 0, 7, CHAR), (0xbc, 1, 3, 0, 0), (0x54, 1, 0, 0, R | W), (0x5d, 1, 3, 4, 0),
                        (0x55, 4, 0, 3, 5), (0x55, 5, 0, 2, 0), (0xb4, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]
    # default deny at the end
    assert p[-2:] == [(0xb4, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)]
    code = dv.encode(p)
    assert len(code) == 8 * len(p)
    assert struct.unpack_from("<BBhi", code, 8 * 6) == (0x55, 2, 4, CHAR)


@pytest.mark.parametrize("dev,acc,major,minor,want", [
    (CHAR, R | W, 1, 3, 1),
    (CHAR, M, 1, 3, 1),
    (CHAR, R, 1, 5, 0),          # /dev/zero: not allowed
    (CHAR, W, 136, 7, 1),
    (CHAR, R | W, 5, 0, 1),
    (CHAR, M, 5, 0, 0),          # mknod of /dev/tty not granted
    (BLOCK, M, 8, 0, 1),
    (BLOCK, R, 8, 0, 0),
    (CHAR, M, 8, 0, 0),
])
def test_program_decisions(dev, acc, major, minor, want):
    assert dv.run(dv.program(RULES), dev, acc, major, minor) == want


def test_emulator_blacklist_and_removal():
    rules = [{"allow": True, "access": "rwm"},                                   # allow all
             {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "rw"},
             {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "w"},
             {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]  # gives read back
    e = dv.Emulator()
    for r in rules:
        e.apply(r)
    assert e.default_allow and e.rules() == [(False, "c", 1, 5, "w")]
    p = dv.program(rules)
    assert dv.run(p, CHAR, R, 1, 5) == 1
    assert dv.run(p, CHAR, W, 1, 5) == 0
    assert dv.run(p, BLOCK, W, 8, 1) == 1
    # "a" resets: everything before is forgotten
    e.apply({"allow": False, "type": "a"})
    assert not e.default_allow and e.rules() == []


def test_invalid_rules():
    for bad in ({"allow": True, "type": "x"}, {"allow": True, "type": "c", "access": "xyz"},
                {"allow": True, "type": "c", "major": -5}, {"allow": True, "type": "p"}):
        with pytest.raises(InvalidArgument):
            dv.program([bad])
    # runc's leniency: letters beyond r, w and m are dropped, not refused
    assert dv.normalize({"allow": True, "type": "c", "access": "rwx"}) == (True, "c", None, None, "rw")


def test_program_loads_in_the_kernel():
    import os

    from ketch.linux import bpf
    for rules in (RULES, [], [{"allow": True, "access": "rwm"}, {"allow": False, "type": "b", "major": 8}]):
        fd = bpf.prog_load_cgroup_device(dv.encode(dv.program(rules)), dv.LICENSE)
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-prog", fd
        os.close(fd)


def test_bad_program_is_refused_with_verifier_log():
    from ketch.linux import bpf
    # no exit instruction: the verifier must refuse, and say why
    with pytest.raises(OSError) as e:
        bpf.prog_load_cgroup_device(dv.encode([dv.insn(dv.ALU_MOV_K, 0, imm=1)]))
    assert "bpf prog load" in str(e.value)


def test_with_defaults_keeps_the_oci_devices():
    p = dv.program(dv.with_defaults([{"allow": False, "access": "rwm"},
                                     {"allow": False, "type": "c", "major": 1, "minor": 3}]))
    assert dv.run(p, CHAR, R | W, 1, 3) == 1        # /dev/null cannot be taken away
    assert dv.run(p, CHAR, R | W, 136, 4) == 1      # /dev/pts/4
    assert dv.run(p, CHAR, M, 10, 200) == 1         # mknod of any char device
    assert dv.run(p, CHAR, R, 10, 200) == 0         # but not opening /dev/net/tun
    assert dv.run(p, BLOCK, R, 8, 0) == 0
