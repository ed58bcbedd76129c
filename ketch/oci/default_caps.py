"""Docker's default capability set for containers (moby oci/caps DefaultCapabilities)."""

DEFAULT_CAPS: list = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


def default_capabilities() -> dict:
    """A process.capabilities object with the default set (no ambient, no inheritable, as Docker)."""
    return {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")}
