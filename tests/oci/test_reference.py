"""The Docker reference grammar and normalisation, table-driven."""

import pytest

from ketch.errors import InvalidArgument
from ketch.oci.reference import Reference, parse, parse_repository

D = "sha256:" + "a" * 64

VALID = [
    # input, str(), familiar()
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
    ("localhost:5000/x/y:t", "localhost:5000/x/y:t", "localhost:5000/x/y:t"),
    ("quay.io/org/img:v1.2_3-x", "quay.io/org/img:v1.2_3-x", "quay.io/org/img:v1.2_3-x"),
    (f"host:5000/repo:tag@{D}", f"host:5000/repo:tag@{D}", f"host:5000/repo:tag@{D}"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}"),
    ("a.b/c__d/e-f.g", "a.b/c__d/e-f.g:latest", "a.b/c__d/e-f.g:latest"),
    ("a--b", "docker.io/library/a--b:latest", "a--b:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("Host.Example/x", "Host.Example/x:latest", "Host.Example/x:latest"),  # domains may be upper case
]

INVALID = [
    ("", "empty"),
    ("Busybox", "repository name must be lowercase"),
    ("user/App", "repository name must be lowercase"),
    ("localhost/Up", "repository name must be lowercase"),
    ("busybox:", "invalid tag format"),
    ("busybox:-x", "invalid tag format"),
    ("busybox:" + "t" * 129, "invalid tag format"),
    ("busybox@sha256:abc", "invalid digest"),
    (f"busybox@sha256:{'A' * 64}", "invalid digest"),
    (f"busybox@md5:{'a' * 32}", "invalid digest"),
    ("a//b", "at least one component"),
    ("a/", "at least one component"),
    ("-a", "invalid repository name"),
    ("a_", "invalid repository name"),
    ("a___b", "invalid repository name"),
    ("a b", "whitespace"),
    ("a" * 64, "64-byte hexadecimal"),
    ("x/" + "a" * 256, "not be more than 255"),
    ("bad_domain.com:xx/x", "invalid"),
    (f"x@{D}@{D}", "more than one"),
]


@pytest.mark.parametrize("s,full,familiar", VALID)
def test_valid(s, full, familiar):
    r = parse(s)
    assert str(r) == full
    assert r.familiar() == familiar
    assert parse(str(r)) == r      # normalised form is a fixed point


@pytest.mark.parametrize("s,why", INVALID)
def test_invalid(s, why):
    with pytest.raises(InvalidArgument, match="invalid reference format") as e:
        parse(s)
    assert why in str(e.value)


def test_parts_and_helpers():
    r = parse(f"localhost:5000/a/b:t@{D}")
    assert r == Reference("localhost:5000", "a/b", "t", D)
    assert r.name == "localhost:5000/a/b" and r.object == D
    assert parse("busybox", default_tag=None).tag is None
    assert parse("busybox").object == "latest"
    assert str(parse("busybox").with_tag("1")) == "docker.io/library/busybox:1"
    assert parse_repository("busybox").path == "library/busybox"
    with pytest.raises(InvalidArgument):
        parse_repository("busybox:1")
    with pytest.raises(InvalidArgument, match="invalid tag"):
        parse("busybox").with_tag("bad tag")
