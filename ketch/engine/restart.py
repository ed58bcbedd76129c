"""Restart policy, pure (after moby's restartmanager): whether to restart, and after how long.

No clock and no container here: the caller passes the exit code, the restart count, whether
the user stopped the container, and how long the last run lasted.
"""

from __future__ import annotations

from dataclasses import dataclass

from ketch.errors import InvalidArgument

NAMES = ("no", "always", "on-failure", "unless-stopped")
BACKOFF_START = 0.1        # seconds; doubled on each quick exit
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0  # a run this long starts the back-off again


@dataclass(frozen=True)
class RestartPolicy:
    name: str = "no"
    maximum_retry_count: int = 0

    @classmethod
    def parse(cls, value: object) -> RestartPolicy:
        """HostConfig.RestartPolicy, checked with Docker's messages."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go struct field "
                                  "HostConfig.RestartPolicy of type container.RestartPolicy")
        name = value.get("Name") or "no"
        if name not in NAMES:
            raise InvalidArgument(f"invalid restart policy '{name}'")
        raw = value.get("MaximumRetryCount") or 0
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise InvalidArgument("json: cannot unmarshal value into Go struct field "
                                  "RestartPolicy.HostConfig.RestartPolicy.MaximumRetryCount of type int")
        if raw and name != "on-failure":
            raise InvalidArgument("invalid restart policy: maximum retry count can only be used with 'on-failure'")
        if raw < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
        return cls(name, raw)

    def to_api(self) -> dict:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}

    @property
    def restarts(self) -> bool:
        return self.name != "no"


def should_restart(policy: RestartPolicy, exit_code: int, restart_count: int, stopped_by_user: bool) -> bool:
    if stopped_by_user:
        return False
    if policy.name in ("always", "unless-stopped"):
        return True
    if policy.name == "on-failure":
        mx = policy.maximum_retry_count
        return exit_code != 0 and (mx == 0 or restart_count < mx)
    return False


def next_backoff(previous: float, ran_for: float) -> float:
    """The delay before the next restart: 100 ms doubling to a minute, reset after 10 s of uptime."""
    if ran_for >= BACKOFF_RESET_AFTER or previous <= 0:
        return BACKOFF_START
    return min(previous * 2, BACKOFF_MAX)
