"""A container's status as a state machine: the statuses, the allowed transitions, the predicates.

Docker's statuses and the moves between them, written down once:

    created ──start──> running <──pause/unpause──> paused
       │                  │ exit
       │                  v
       │              restarting ──(back-off)──> running
       │                  │ kill/stop
       v                  v
    removing <─────── exited ──start──> running
       │
       v
    (gone), or dead when cleanup failed (dead can be started again, or removed)

Every change of status goes through `Status.to` (via Container.set_status), which refuses a
move the table does not allow: an engine bug shows up as an error, not as a state Docker's
clients do not expect.
"""

from __future__ import annotations

from enum import Enum

from ketch.errors import Internal


class Status(str, Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value

    # --- predicates ------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """A process exists (it may be frozen)."""
        return self in (Status.RUNNING, Status.PAUSED)

    @property
    def active(self) -> bool:
        """Docker's State.Running: alive or about to run again."""
        return self in (Status.RUNNING, Status.PAUSED, Status.RESTARTING)

    @property
    def can_start(self) -> bool:
        return self in (Status.CREATED, Status.EXITED, Status.DEAD)

    @property
    def can_remove_unforced(self) -> bool:
        return not self.active and self is not Status.REMOVING

    @property
    def prunable(self) -> bool:
        return self in (Status.CREATED, Status.EXITED, Status.DEAD)

    def allows(self, new: Status) -> bool:
        return new is self or new in TRANSITIONS[self]

    def to(self, new: Status) -> Status:
        if not self.allows(new):
            raise Internal(f"container status: {self.value} -> {new.value} is not a valid transition")
        return new


TRANSITIONS: dict[Status, frozenset[Status]] = {
    # a start that fails leaves a never-started container created, with the error
    Status.CREATED: frozenset({Status.RUNNING, Status.EXITED, Status.REMOVING}),
    Status.RUNNING: frozenset({Status.PAUSED, Status.EXITED, Status.RESTARTING, Status.REMOVING}),
    Status.PAUSED: frozenset({Status.RUNNING, Status.EXITED, Status.RESTARTING, Status.REMOVING}),
    Status.RESTARTING: frozenset({Status.RUNNING, Status.EXITED, Status.REMOVING}),
    Status.EXITED: frozenset({Status.RUNNING, Status.RESTARTING, Status.REMOVING}),
    Status.REMOVING: frozenset({Status.DEAD, Status.EXITED}),
    Status.DEAD: frozenset({Status.RUNNING, Status.EXITED, Status.REMOVING}),
}

ALL = tuple(s.value for s in Status)
