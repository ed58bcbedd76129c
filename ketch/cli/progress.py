"""Progress of pull/push/load: one bar per layer with rich on a terminal, plain lines otherwise.

Consumes Docker JSON messages ({"status", "id", "progressDetail": {"current", "total"}}).
Plain mode prints a line whenever a layer's status changes (not every byte), so logs stay short.
"""

import sys


class PlainProgress:
    def __init__(self, out=None):
        self.out = out or sys.stdout
        self._last = {}

    def __call__(self, ev):
        if "stream" in ev:
            self.out.write(ev["stream"])
            self.out.flush()
            return
        status, lid = ev.get("status", ""), ev.get("id")
        if lid:
            if self._last.get(lid) == status:
                return
            self._last[lid] = status
            print(f"{lid}: {status}", file=self.out, flush=True)
        else:
            print(status, file=self.out, flush=True)

    def close(self):
        pass


class RichProgress:
    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
        self.console = Console()
        self.p = Progress(TextColumn("{task.fields[lid]}"), TextColumn("{task.description:<20}"), BarColumn(),
                          DownloadColumn(), TransferSpeedColumn(), console=self.console, transient=False)
        self.tasks = {}
        self.p.start()

    def __call__(self, ev):
        if "stream" in ev:
            self.p.console.print(ev["stream"].rstrip("\n"), markup=False, highlight=False)
            return
        status, lid = ev.get("status", ""), ev.get("id")
        if not lid or status.startswith("Pulling from"):
            self.p.console.print(f"{lid}: {status}" if lid else status, markup=False, highlight=False)
            return
        det = ev.get("progressDetail") or {}
        if lid not in self.tasks:
            self.tasks[lid] = self.p.add_task(status, lid=lid, total=det.get("total") or None)
        tid = self.tasks[lid]
        kw = {"description": status}
        if det.get("total"):
            kw["total"] = det["total"]
        if det.get("current") is not None:
            kw["completed"] = det["current"]
        if status in ("Pull complete", "Already exists", "Pushed", "Layer already exists") or \
                status.startswith("Mounted from"):
            task = self.p.tasks[[t.id for t in self.p.tasks].index(tid)]
            kw["completed"] = task.total or 1
            if not task.total:
                kw["total"] = 1
        self.p.update(tid, **kw)

    def close(self):
        self.p.stop()


class QuietProgress:
    def __call__(self, ev):
        pass

    def close(self):
        pass


def make(quiet=False):
    if quiet:
        return QuietProgress()
    if sys.stdout.isatty():
        try:
            return RichProgress()
        except ImportError:
            pass
    return PlainProgress()
