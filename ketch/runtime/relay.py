"""Copy between our own terminal and a container's pty master (for `run`/`exec` without a console socket)."""

from __future__ import annotations

import _signal as signal
import os
import select


def copy_until_exit(master: int, pid: int) -> None:
    import termios
    import tty as ttymod
    stdin_tty = os.isatty(0)
    saved = None
    if stdin_tty:
        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
        _copy_size(0, master)
        signal.signal(signal.SIGWINCH, lambda *_: _copy_size(0, master))
    try:
        fds = [master, 0]
        while True:
            try:
                r, _, _ = select.select(fds, [], [], 0.5)
            except InterruptedError:
                continue
            if master in r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if 0 in r:
                data = os.read(0, 65536)
                if not data:
                    fds.remove(0)
                else:
                    os.write(master, data)
            if not r and not _alive(pid):
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)


def _copy_size(src, dst):
    import fcntl
    import termios
    try:
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rfind(b")") + 2:data.rfind(b")") + 3] != b"Z"
    except FileNotFoundError:
        return False
