"""ketch-runtime's env-file annotation (ketch.runtime.config.with_env_file): the entries of the named
file join process.env in a new config, the one the state keeps is left as it was."""

from __future__ import annotations

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime.config import ENV_FILE_ANNOTATION, with_env_file


def test_entries_join_the_process_env_of_a_copy(tmp_path):
    f = tmp_path / "env"
    f.write_bytes(b"TOK=two\nlines\0A=new\0")
    cfg = {"process": {"env": ["A=old", "PATH=/bin"], "args": ["sh"]},
           "annotations": {ENV_FILE_ANNOTATION: str(f)}}
    out = with_env_file(cfg)
    assert out["process"]["env"] == ["PATH=/bin", "TOK=two\nlines", "A=new"]
    assert cfg["process"]["env"] == ["A=old", "PATH=/bin"]          # the state's copy is untouched
    assert with_env_file({"process": {"env": []}}) == {"process": {"env": []}}


@pytest.mark.parametrize(("path", "data", "word"), [
    ("relative/env", None, "not an absolute path"),
    ("/nonexistent/env", None, "No such file"),
    (None, b"NOEQUALS\0", "not KEY=VALUE"),
])
def test_bad_files_are_refused(tmp_path, path, data, word):
    if data is not None:
        (tmp_path / "env").write_bytes(data)
        path = str(tmp_path / "env")
    with pytest.raises(InvalidArgument, match=word):
        with_env_file({"process": {}, "annotations": {ENV_FILE_ANNOTATION: path}})
