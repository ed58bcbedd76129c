"""Docker's detach keys: parsing the spec and finding the sequence in typed input.

Shared by the API server (which detaches an attach or exec session) and the client (which
detaches its terminal); pure data, no I/O.
"""

_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(spec):
    """Docker's detach key spec ("ctrl-p,ctrl-q", "a,ctrl-@") to bytes; ValueError if invalid."""
    if spec is None or spec == "":
        spec = "ctrl-p,ctrl-q"
    out = bytearray()
    for key in spec.split(","):
        key = key.strip()
        if key.startswith("ctrl-") and len(key) == 6:
            ch = key[5]
            if ch.isalpha():
                out.append(ord(ch.lower()) - ord("a") + 1)
            elif ch in _SPECIAL:
                out.append(_SPECIAL[ch])
            else:
                raise ValueError(f"Invalid detach keys ({spec}) provided")
        elif len(key) == 1:
            out.append(ord(key))
        else:
            raise ValueError(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class DetachMatcher:
    """Find the detach sequence in typed input; a partial match is held back until decided."""

    def __init__(self, keys: bytes):
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes):
        """(bytes to pass on, whether the sequence was typed)."""
        if not self.keys:
            return data, False
        buf = self.held + data
        self.held = b""
        i = buf.find(self.keys)
        if i >= 0:
            return buf[:i], True
        for n in range(min(len(self.keys) - 1, len(buf)), 0, -1):
            if buf.endswith(self.keys[:n]):
                self.held = buf[-n:]
                return buf[:-n], False
        return buf, False
