"""ketch-runtime's env-file annotation (ketch.runtime.config.with_env_file): the entries of the named
file join process.env in a new config, the one the state keeps is left as it was; only a private
file made for it is read, since annotations can come from whoever starts a container."""

from __future__ import annotations

import os

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime.config import ENV_FILE_ANNOTATION, encode_env_file, with_env_file


def _env_file(path, data: bytes, mode=0o600):
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


def _cfg(path):
    return {"process": {}, "annotations": {ENV_FILE_ANNOTATION: path}}


def test_entries_join_the_process_env_of_a_copy(tmp_path):
    f = _env_file(tmp_path / "env", encode_env_file([b"TOK=two\nlines", b"A=new"]))
    cfg = {"process": {"env": ["A=old", "PATH=/bin"], "args": ["sh"]},
           "annotations": {ENV_FILE_ANNOTATION: f}}
    out = with_env_file(cfg)
    assert out["process"]["env"] == ["PATH=/bin", "TOK=two\nlines", "A=new"]
    assert cfg["process"]["env"] == ["A=old", "PATH=/bin"]          # the state's copy is untouched
    assert with_env_file({"process": {"env": []}}) == {"process": {"env": []}}


@pytest.mark.parametrize(("path", "data", "word"), [
    ("relative/env", None, "not an absolute path"),
    ("/nonexistent/env", None, "No such file"),
    (None, encode_env_file([b"NOEQUALS"]), "not KEY=VALUE"),
])
def test_bad_files_are_refused(tmp_path, path, data, word):
    if data is not None:
        path = _env_file(tmp_path / "env", data)
    with pytest.raises(InvalidArgument, match=word):
        with_env_file(_cfg(path))


def test_only_a_private_env_file_of_the_runtimes_user_is_read(tmp_path):
    """A host file named by someone's annotation (a credentials file with KEY=VALUE lines, through
    a symlink or not, readable by others or not) never reaches the container's environment."""
    creds = _env_file(tmp_path / "credentials", b"aws_secret_access_key=SECRET\0")
    with pytest.raises(InvalidArgument, match="not a ketch-runtime env file") as e:
        with_env_file(_cfg(creds))
    assert "SECRET" not in str(e.value)
    shared = _env_file(tmp_path / "shared", encode_env_file([b"A=1"]), mode=0o640)
    with pytest.raises(InvalidArgument, match="not a private file"):
        with_env_file(_cfg(shared))
    good = _env_file(tmp_path / "good", encode_env_file([b"A=1"]))
    os.symlink(good, tmp_path / "link")
    with pytest.raises(InvalidArgument, match="Too many levels of symbolic links"):
        with_env_file(_cfg(str(tmp_path / "link")))
    with pytest.raises(InvalidArgument, match="not a private file"):
        with_env_file(_cfg(str(tmp_path)))                      # a directory
    if os.geteuid() == 0:
        os.chown(good, 1000, 1000)
        with pytest.raises(InvalidArgument, match="not a private file"):
            with_env_file(_cfg(good))                           # another user's file
