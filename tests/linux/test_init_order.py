"""The init's security sequence, end to end, in the order docs/security.md prescribes (runc's)."""

import os

import pytest

from ketch.linux import capabilities as caps
from ketch.linux import seccomp, syscalls
from ketch.oci.default_caps import DEFAULT_CAPS
from ketch.oci.seccomp_default import profile_for
from tests.linux.childproc import exec_in_child

UID = GID = 1000


def finalize(process_caps, seccomp_spec, no_new_privs, uid, gid):
    """What the runtime's init does just before exec."""
    if no_new_privs:
        syscalls.set_no_new_privs()
    if seccomp_spec is not None and not no_new_privs:
        seccomp.load_filter(seccomp_spec)  # still has CAP_SYS_ADMIN
    caps.drop_bounding(process_caps)
    caps.keep_caps_for_setuid(True)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    caps.keep_caps_for_setuid(False)
    caps.set_process_caps(process_caps)
    if seccomp_spec is not None and no_new_privs:
        seccomp.load_filter(seccomp_spec)  # last step before exec


def fields(text):
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@pytest.mark.parametrize("nnp", [False, True])
def test_default_profile_user_and_caps(nnp):
    process_caps = {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    spec = profile_for(DEFAULT_CAPS, None)
    out, status = exec_in_child(lambda: finalize(process_caps, spec, nnp, UID, GID),
                                ["/bin/cat", "/proc/self/status"])
    assert os.WEXITSTATUS(status) == 0
    f = fields(out.decode())
    want = caps.parse(DEFAULT_CAPS)
    assert f["Uid"].split() == [str(UID)] * 4 and f["Gid"].split() == [str(GID)] * 4
    assert f["Groups"].strip() == ""
    assert int(f["CapEff"], 16) == int(f["CapAmb"], 16) == int(f["CapBnd"], 16) == want
    assert f["Seccomp"].strip() == "2"  # filter mode
    assert f["NoNewPrivs"].strip() == ("1" if nnp else "0")
