"""Device access rules: v1 devices.allow/deny lines and the v2 eBPF filter program.

OCI ``linux.resources.devices`` is a list applied in order with cgroup v1 semantics,
starting from "deny everything" (runc writes ``a`` to devices.deny first). cgroup v2 has
no device files: access is decided by a BPF_PROG_TYPE_CGROUP_DEVICE program. We emulate
the v1 kernel's rule list (a default plus exceptions, as runc's devices emulator does)
and compile the result the way runc's devicefilter does::

    r2 = ctx->access_type & 0xffff       # BPF_DEVCG_DEV_BLOCK 1 / CHAR 2
    r3 = ctx->access_type >> 16          # BPF_DEVCG_ACC_MKNOD 1 / READ 2 / WRITE 4
    r4 = ctx->major; r5 = ctx->minor
    block i: if r2 != type goto i+1; [if r3 & acc != r3 goto i+1]
             [if r4 != major goto i+1]; [if r5 != minor goto i+1]; return allow_i
    last:    return default

All exceptions have the opposite action of the default, so their order does not matter.
"""

import struct

from ketch.errors import InvalidArgument

BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
_ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
_ALL_ACCESS = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE

# eBPF opcodes (linux/bpf_common.h, linux/bpf.h)
LDX_MEM_W = 0x61        # BPF_LDX | BPF_MEM | BPF_W
ALU_AND_K = 0x54        # BPF_ALU | BPF_AND | BPF_K   (32-bit)
ALU_RSH_K = 0x74        # BPF_ALU | BPF_RSH | BPF_K
ALU_MOV_K = 0xb4        # BPF_ALU | BPF_MOV | BPF_K
ALU_MOV_X = 0xbc        # BPF_ALU | BPF_MOV | BPF_X
JMP_JNE_K = 0x55        # BPF_JMP | BPF_JNE | BPF_K
JMP_JNE_X = 0x5d        # BPF_JMP | BPF_JNE | BPF_X
JMP_EXIT = 0x95         # BPF_JMP | BPF_EXIT
R0, R1, R2, R3, R4, R5 = range(6)

LICENSE = "Apache"


def _allow(typ, major, minor, access="rwm"):
    return {"allow": True, "type": typ, "major": major, "minor": minor, "access": access}


# The devices every container may use whatever its spec says (runc specconv AllowedDevices):
# the OCI default devices, /dev/pts/*, /dev/ptmx, and mknod of any char/block node.
DEFAULT_ALLOWED = (
    _allow("c", None, None, "m"), _allow("b", None, None, "m"),
    _allow("c", 1, 3), _allow("c", 1, 8), _allow("c", 1, 7), _allow("c", 5, 0),
    _allow("c", 1, 5), _allow("c", 1, 9), _allow("c", 136, None), _allow("c", 5, 2),
)


def with_defaults(rules):
    """The spec's rules followed by DEFAULT_ALLOWED, as runc builds the cgroup's list
    (appended last, so a spec cannot take /dev/null away)."""
    return list(rules or []) + [dict(r) for r in DEFAULT_ALLOWED]


def normalize(rule):
    """An OCI device rule as (allow, type, major, minor, access); None majors/minors are wildcards."""
    if not isinstance(rule, dict):
        raise InvalidArgument("invalid device rule %r: not an object" % (rule,))
    allow = bool(rule.get("allow", False))
    typ = rule.get("type") or "a"
    if typ not in ("a", "c", "b", "u", "p"):
        raise InvalidArgument("invalid device rule type `%s`" % typ)
    if typ == "u":
        typ = "c"           # unbuffered char device, like runc
    if typ == "p":
        raise InvalidArgument("invalid device rule type `p`: fifos cannot be in a cgroup rule")
    major, minor = rule.get("major"), rule.get("minor")
    for v in (major, minor):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < -1 or v > 0xFFFFFFFF):
            raise InvalidArgument("invalid device rule number %r" % (v,))
    major = None if major in (None, -1) else major
    minor = None if minor in (None, -1) else minor
    given = rule.get("access") or "rwm"
    # runc's leniency: letters other than r, w and m are dropped (`rwa` is `rw`), but a rule left
    # with none of them is refused (runc fails such a create too, less clearly)
    access = "".join(c for c in "rwm" if c in given)
    if not access:
        raise InvalidArgument("invalid device rule access `%s`" % given)
    return allow, typ, major, minor, access


def v1_line(typ, major, minor, access):
    """``c 1:3 rwm`` as devices.allow/devices.deny take it."""
    if typ == "a":
        return "a *:* rwm"
    return "%s %s:%s %s" % (typ, "*" if major is None else major, "*" if minor is None else minor, access)


def v1_writes(rules):
    """[(file, line)]: devices.deny "a" first, then each rule in order (as runc)."""
    out = [("devices.deny", "a")]
    for r in rules:
        allow, typ, major, minor, access = normalize(r)
        out.append(("devices.allow" if allow else "devices.deny", v1_line(typ, major, minor, access)))
    return out


class Emulator:
    """The v1 kernel's device list: a default action plus exceptions to it.

    Starts as deny-all. ``a`` resets the default and drops every exception; a rule
    with the default's action takes access bits away from an exception with the same
    type/major/minor (the kernel's dev_exception_rm); the opposite action adds them.
    """

    def __init__(self):
        self.default_allow = False
        self.exceptions = {}     # (type, major, minor) -> access string, insertion ordered

    def apply(self, rule):
        allow, typ, major, minor, access = normalize(rule)
        if typ == "a":
            self.default_allow = allow
            self.exceptions = {}
            return
        key = (typ, major, minor)
        if allow == self.default_allow:
            if key in self.exceptions:
                left = "".join(c for c in self.exceptions[key] if c not in access)
                if left:
                    self.exceptions[key] = left
                else:
                    del self.exceptions[key]
            return
        have = self.exceptions.get(key, "")
        self.exceptions[key] = "".join(c for c in "rwm" if c in have or c in access)

    def rules(self):
        return [(not self.default_allow, t, ma, mi, acc) for (t, ma, mi), acc in self.exceptions.items()]


def insn(code, dst=0, src=0, off=0, imm=0):
    return (code, dst, src, off, imm)


def encode(insns):
    """struct bpf_insn[] as bytes: u8 code, u8 dst:4|src:4, s16 off, s32 imm (little endian)."""
    return b"".join(struct.pack("<BBhi", c, (d & 0xF) | ((s & 0xF) << 4), o, i) for c, d, s, o, i in insns)


def _block(allow, typ, major, minor, access):
    bpf_type = BPF_DEVCG_DEV_CHAR if typ == "c" else BPF_DEVCG_DEV_BLOCK
    acc = 0
    for c in access:
        acc |= _ACCESS_BITS[c]
    # each jump is "to the next block", patched once the block length is known
    body = [[JMP_JNE_K, R2, 0, None, bpf_type]]
    if acc != _ALL_ACCESS:
        body += [[ALU_MOV_X, R1, R3, 0, 0], [ALU_AND_K, R1, 0, 0, acc], [JMP_JNE_X, R1, R3, None, 0]]
    if major is not None:
        body.append([JMP_JNE_K, R4, 0, None, _s32(major)])
    if minor is not None:
        body.append([JMP_JNE_K, R5, 0, None, _s32(minor)])
    body += [[ALU_MOV_K, R0, 0, 0, 1 if allow else 0], [JMP_EXIT, 0, 0, 0, 0]]
    n = len(body)
    for i, ins in enumerate(body):
        if ins[3] is None:
            ins[3] = n - i - 1
    return [tuple(i) for i in body]


def _s32(v):
    return v - (1 << 32) if v >= (1 << 31) else v


def program(rules):
    """The device filter for OCI ``rules`` as a list of instructions (see module doc)."""
    emu = Emulator()
    for r in rules:
        emu.apply(r)
    insns = [
        insn(LDX_MEM_W, R2, R1, 0), insn(ALU_AND_K, R2, imm=0xFFFF),
        insn(LDX_MEM_W, R3, R1, 0), insn(ALU_RSH_K, R3, imm=16),
        insn(LDX_MEM_W, R4, R1, 4),
        insn(LDX_MEM_W, R5, R1, 8),
    ]
    for rule in emu.rules():
        insns += _block(*rule)
    insns += [insn(ALU_MOV_K, R0, imm=1 if emu.default_allow else 0), insn(JMP_EXIT)]
    return insns


def run(insns, dev_type, access, major, minor):
    """Interpret a device filter for one request: 1 allow, 0 deny.

    A tiny interpreter for exactly the instructions program() emits; it lets tests
    check the program's decisions against the rules on a host without cgroup v2.
    """
    reg = [0] * 11
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    pc = 0
    while True:
        code, dst, src, off, imm = insns[pc]
        pc += 1
        u = imm & 0xFFFFFFFF
        if code == LDX_MEM_W:
            reg[dst] = struct.unpack_from("<I", ctx, reg[src] + off)[0] if src == R1 and reg[src] == 0 else None
        elif code == ALU_AND_K:
            reg[dst] = (reg[dst] & u) & 0xFFFFFFFF
        elif code == ALU_RSH_K:
            reg[dst] = (reg[dst] & 0xFFFFFFFF) >> u
        elif code == ALU_MOV_K:
            reg[dst] = u
        elif code == ALU_MOV_X:
            reg[dst] = reg[src] & 0xFFFFFFFF
        elif code == JMP_JNE_K:
            if reg[dst] != u:
                pc += off
        elif code == JMP_JNE_X:
            if reg[dst] != reg[src]:
                pc += off
        elif code == JMP_EXIT:
            return reg[R0]
        else:
            raise InvalidArgument("unknown opcode %#x" % code)
