"""The init's security sequence, end to end: the runtime's own drop_privileges (ketch/runtime/process.py,
in the order docs/security.md prescribes, runc's) run in a child that then execs; tests/unit/
test_privilege_order.py checks the order of its steps."""

import os

import pytest

from ketch.linux import capabilities as caps
from ketch.oci.default_caps import DEFAULT_CAPS
from ketch.oci.seccomp_default import profile_for
from ketch.runtime.process import drop_privileges
from tests.linux.childproc import exec_in_child

UID = GID = 1000


def fields(text):
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@pytest.mark.parametrize("nnp", [False, True])
def test_default_profile_user_and_caps(nnp):
    process_caps = {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    spec = profile_for(DEFAULT_CAPS, None)
    proc = {"capabilities": process_caps, "noNewPrivileges": nnp, "user": {"uid": UID, "gid": GID}}
    out, status = exec_in_child(lambda: drop_privileges(proc, spec),
                                ["/bin/cat", "/proc/self/status"])
    assert os.WEXITSTATUS(status) == 0
    f = fields(out.decode())
    want = caps.parse(DEFAULT_CAPS)
    assert f["Uid"].split() == [str(UID)] * 4 and f["Gid"].split() == [str(GID)] * 4
    assert f["Groups"].strip() == ""
    assert int(f["CapEff"], 16) == int(f["CapAmb"], 16) == int(f["CapBnd"], 16) == want
    assert f["Seccomp"].strip() == "2"  # filter mode
    assert f["NoNewPrivs"].strip() == ("1" if nnp else "0")
