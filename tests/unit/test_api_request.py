"""The API's one JSON reader, without a daemon: bounded bodies, Go's decoder errors, keys
matched as Go matches struct fields; Docker's reference globs; the error table."""

import asyncio
import json

import pytest

from ketch.api import errors as api_errors
from ketch.api.request import (
    AUTH,
    CREATE,
    EXEC_CREATE,
    MAX_JSON_BODY,
    UPDATE,
    canonical,
    decode_json,
    json_body,
    read_bounded,
)
from ketch.errors import InvalidArgument
from ketch.images.async_service import reference_match


def err(raw: bytes) -> str:
    with pytest.raises(InvalidArgument) as e:
        decode_json(raw)
    return str(e.value)


@pytest.mark.parametrize("raw, message", [
    (b"x", "invalid JSON: invalid character 'x' looking for beginning of value (at byte offset 0)"),
    (b'{"Image": busybox}', "invalid character 'b' looking for beginning of value (at byte offset 10)"),
    (b'{"Image":', "invalid JSON: unexpected EOF (at byte offset 9)"),
    (b'{"Image": "busy', "unexpected EOF"),
    (b'{"a" 1}', "invalid character '1' after object key (at byte offset 5)"),
    (b'{"a":1 "b":2}', "invalid character '\"' after object key:value pair (at byte offset 7)"),
    (b'[1 2]', "invalid character '2' after array element (at byte offset 3)"),
    (b"{1:2}", "invalid character '1' looking for beginning of object key string (at byte offset 1)"),
    (b"{} x", "invalid character 'x' after top-level value (at byte offset 3)"),
    (b'{"a":"\x01"}', "invalid character '\\x01' in string literal (at byte offset 6)"),
    (b'["\\q"]', "invalid character 'q' in string escape code"),
    (b"NaN", "invalid character 'N' looking for beginning of value"),
    ('{"é": x}'.encode(), "(at byte offset 7)"),  # a byte offset, not a character index
])
def test_invalid_json_in_go_words(raw, message):
    assert message in err(raw)


def test_deep_nesting_is_a_400_not_a_recursion_error():
    assert "invalid JSON: exceeded max depth (at byte offset" in err(b"[" * 100_000)
    assert "exceeded max depth" in err(b'{"a":' * 100_000)


def test_valid_json_and_invalid_utf8_in_strings():
    assert decode_json(b' {"a": [1, 2.5, "x", null, true]} ') == {"a": [1, 2.5, "x", None, True]}
    assert decode_json(b'{"a": "\xff"}') == {"a": "\ufffd"}  # Go: U+FFFD, not an error


def test_keys_canonical_as_go_matches_fields():
    body = {"image": "busybox", "CMD": ["true"], "labels": {"keep.Case": "1"},
            "hostconfig": {"restartpolicy": {"name": "always", "maximumretrycount": 0},
                           "mounts": [{"type": "bind", "bindoptions": {"propagation": "rshared"}}],
                           "sysctls": {"net.Core.x": "1"}, "logconfig": {"type": "json-file",
                                                                          "config": {"Max-Size": "1m"}},
                           "ulimits": [{"name": "nofile", "soft": 1, "hard": 2}], "nanocpus": 5,
                           "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}},
            "networkingconfig": {"endpointsconfig": {"MyNet": {"aliases": ["a"], "ipamconfig": {"ipv4address": "x"}}}},
            "healthcheck": {"test": ["NONE"]}, "NotAField": 1}
    assert canonical(body, CREATE) == {
        "Image": "busybox", "Cmd": ["true"], "Labels": {"keep.Case": "1"},
        "HostConfig": {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
                       "Mounts": [{"Type": "bind", "BindOptions": {"Propagation": "rshared"}}],
                       "Sysctls": {"net.Core.x": "1"}, "LogConfig": {"Type": "json-file", "Config": {"Max-Size": "1m"}},
                       "Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 2}], "NanoCpus": 5,
                       "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}},
        "NetworkingConfig": {"EndpointsConfig": {"MyNet": {"Aliases": ["a"], "IPAMConfig": {"IPv4Address": "x"}}}},
        "Healthcheck": {"Test": ["NONE"]}, "NotAField": 1}


def test_exec_update_and_auth_keys():
    assert canonical({"detachKeys": "ctrl-x", "cmd": ["sh"], "attachStdout": True}, EXEC_CREATE) == {
        "DetachKeys": "ctrl-x", "Cmd": ["sh"], "AttachStdout": True}
    # of two spellings of one field the later wins, as in Go
    assert canonical({"DetachKeys": "a", "detachkeys": "b"}, EXEC_CREATE) == {"DetachKeys": "b"}
    assert canonical({"memory": 1, "restartPolicy": {"name": "no"}, "cpushares": 2}, UPDATE) == {
        "Memory": 1, "RestartPolicy": {"Name": "no"}, "CpuShares": 2}
    assert canonical({"Username": "u", "ServerAddress": "r"}, AUTH) == {"username": "u", "serveraddress": "r"}
    assert canonical([1], EXEC_CREATE) == [1]  # not an object: left for the caller to refuse


class FakeContent:
    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.read = 0

    async def readany(self):
        if not self.chunks:
            return b""
        c = self.chunks.pop(0)
        self.read += len(c)
        return c


class FakeRequest:
    def __init__(self, chunks, content_length=None):
        self.content = FakeContent(chunks)
        self.content_length = content_length


def test_body_bounded_by_content_length_without_reading():
    req = FakeRequest([b"x" * 65536] * 1000, content_length=64 << 20)
    with pytest.raises(api_errors.RequestTooLarge, match="at most 1048576 bytes"):
        asyncio.run(read_bounded(req))
    assert req.content.read == 0
    assert api_errors.status_for(api_errors.RequestTooLarge("x")) == 413


def test_chunked_body_read_only_up_to_the_limit():
    req = FakeRequest([b" " * 65536] * 1000)
    with pytest.raises(api_errors.RequestTooLarge):
        asyncio.run(read_bounded(req))
    assert req.content.read <= MAX_JSON_BODY + 65536


def test_json_body_empty_and_schema():
    assert asyncio.run(json_body(FakeRequest([]), allow_empty=True)) == {}
    with pytest.raises(InvalidArgument, match="got EOF while reading request body"):
        asyncio.run(json_body(FakeRequest([b"  "])))
    body = asyncio.run(json_body(FakeRequest([json.dumps({"detachKeys": "ctrl-a"}).encode()]), schema=EXEC_CREATE))
    assert body == {"DetachKeys": "ctrl-a"}


@pytest.mark.parametrize("pattern, ref, ok", [
    ("busybox", "busybox:latest", True), ("busy*", "busybox:1.36", True), ("*", "busybox:latest", True),
    ("*", "example.com/team/app:1", False), ("*/*", "team/app:1", True), ("busybox:1.*", "busybox:1.36", True),
    ("busybox:1.*", "busybox:latest", False), ("b?sybox", "busybox:x", True), ("[ab]usybox", "busybox:x", True),
    ("[^b]usybox", "busybox:x", False), ("example.com/*/app", "example.com/team/app:2", True),
])
def test_reference_globs_as_docker(pattern, ref, ok):
    assert reference_match(pattern, ref) is ok


def test_bad_reference_pattern_is_refused():
    with pytest.raises(InvalidArgument, match="invalid filter 'reference=\\['"):
        reference_match("[", "busybox:latest")
