"""Named build contexts (`ketch build --build-context NAME=DIR|docker-image://REF`) over the classic
builder's protocol, which has one context and no channel for more (BuildKit's session has one).

Ketch's extension: the query's `ketchcontexts` is a JSON object of the contexts by name,
`{"NAME": {"Type": "image", "Ref": "busybox:1.36"}}` or `{"NAME": {"Type": "dir", "Path":
".ketchcontexts.<random>/0"}}`. A `dir` context travels in the body's one tar, as the members under
`Path`: every such path is below one top-level directory whose name starts with `.ketchcontexts.`
(the client picks the suffix, so it meets nothing of the main context). After the tar is unpacked,
the main context's own entries move into a directory of their own beside the named ones (renames on
the same filesystem, the context's tmpfs), so the main context does not see them and each named
context is a root of its own, with its own `.dockerignore` applied again (as BuildKit applies a
local context's own; the client applied it already, other clients may not).

A name is compared as BuildKit compares it (`oci.reference.shortest`: `alpine`, not
`docker.io/library/alpine:latest`): a context overrides a stage, and an image, of the same name.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

from ketch.build import dockerfile as dfmod
from ketch.build import dockerignore
from ketch.errors import InvalidArgument
from ketch.oci import reference

PREFIX = ".ketchcontexts."


@dataclass
class NamedContext:
    name: str
    ref: str = ""                   # Type image: the image reference
    path: str = ""                  # Type dir: its members' directory in the body's tar
    dir: str = ""                   # Type dir: where it is, once unpacked
    matcher: dockerignore.PatternMatcher | None = None

    @property
    def label(self) -> str:
        return f"context {self.name}"


def parse(raw: str | None) -> dict[str, NamedContext]:
    """The `ketchcontexts` query, checked (a 400 names what is wrong)."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidArgument(f"invalid ketchcontexts value: {raw}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("ketchcontexts: a JSON object of the named contexts by name")
    out: dict[str, NamedContext] = {}
    tops = set()
    for name, spec in data.items():
        key = reference.shortest(str(name))
        if not key or key in out:
            raise InvalidArgument(f"ketchcontexts: the context name {name!r} is empty or given twice")
        kind = spec.get("Type") if isinstance(spec, dict) else None
        if kind == "image" and isinstance(spec.get("Ref"), str) and spec["Ref"]:
            if spec["Ref"].lower() != "scratch":
                reference.parse(spec["Ref"])   # a bad reference is its own 400
            out[key] = NamedContext(key, ref=spec["Ref"])
        elif kind == "dir" and isinstance(spec.get("Path"), str):
            path = spec["Path"]
            top, _, sub = path.partition("/")
            if not top.startswith(PREFIX) or not sub or "/" in sub or sub in (".", ".."):
                raise InvalidArgument(f"ketchcontexts: context {name}: Path {path!r} is not "
                                      f"{PREFIX}<suffix>/<name> (a directory of the body's tar)")
            tops.add(top)
            out[key] = NamedContext(key, path=path)
        elif kind in ("image", "dir"):
            raise InvalidArgument(f"ketchcontexts: context {name}: {'Ref' if kind == 'image' else 'Path'} is missing")
        else:
            raise InvalidArgument(f"ketchcontexts: context {name}: Type {kind!r} is not supported "
                                  f"(image or dir; git and URL contexts are not fetched by this builder)")
    if len(tops) > 1:
        raise InvalidArgument(f"ketchcontexts: the directory contexts are under more than one top directory "
                              f"({', '.join(sorted(tops))})")
    return out


def separate(ctx: str, contexts: dict[str, NamedContext]) -> str:
    """Split the unpacked body at ``ctx``: the directory contexts found (and their .dockerignore loaded),
    the main context's entries moved into a directory of their own, whose path is returned."""
    dirs = [c for c in contexts.values() if c.path]
    if not dirs:
        return ctx
    top = dirs[0].path.partition("/")[0]
    for c in dirs:
        d = os.path.join(ctx, *c.path.split("/"))
        # real directories both (lstat): a symlink in the tar must not make a host directory a context
        if not (_real_dir(os.path.join(ctx, top)) and _real_dir(d)):
            raise InvalidArgument(f"ketchcontexts: context {c.name}: {c.path} is not a directory of the body's tar")
        c.dir = d
        c.matcher = dockerignore.load(d, None)
    main = os.path.join(ctx, top, f"main-{uuid.uuid4().hex}")
    os.mkdir(main, 0o755)
    for entry in os.listdir(ctx):
        if entry != top:
            os.rename(os.path.join(ctx, entry), os.path.join(main, entry))
    return main


def _real_dir(path: str) -> bool:
    import stat
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def synthetic_copy(name: str) -> dfmod.CopyInstruction:
    """`COPY --from=NAME . /`: how a directory context becomes the root of a stage that is FROM it
    (BuildKit's local source as a base: its files, no image config)."""
    return dfmod.CopyInstruction("COPY", f"COPY --from={name} . /", 0, 0, sources=["."], dest="/", from_=name)

