"""The `metadata.simulate` vocabulary: how a test asks the simulator to misbehave.

Every key is optional and unknown keys are ignored (a newer test can talk to an older
simulator). A key of the wrong type is a 400 that names `metadata.simulate.<key>`, so a typo in
a test fails loudly instead of silently testing the happy path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .web import ERROR_CODES, bad_request

SIMULATED_STATUSES = (400, 401, 403, 404, 409, 429, 500, 502, 503)
RUN_STATUSES = ("completed", "registered", "dispatched")
MAX_DELTAS = 100_000


@dataclass(frozen=True)
class Faults:
    status: int | None = None
    retry_after: int = 2
    hang_seconds: float = 0.0
    drip_ms: float | None = None  # None: the agent's own pace
    deltas: int | None = None
    cut_after: int | None = None
    error_after: int | None = None
    keep_alive: bool = False
    unknown_frames: bool = False
    no_event_line: bool = False
    multiline_data: bool = False
    non_json_frame: bool = False
    done: bool = False
    run_status: str = "completed"
    omit_usage_fields: tuple[str, ...] = ()
    stamp_frames: bool = False
    # A registered or dispatched run answers `running` to this many lookups, then completes.
    pending_lookups: int = 2

    @property
    def status_code(self) -> str:
        assert self.status is not None
        return ERROR_CODES[self.status]


def _field(key: str) -> str:
    return f"metadata.simulate.{key}"


def _int(spec: dict[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    # bool is an int subclass in Python; `true` is not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{_field(key)} must be an integer")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise bad_request(f"{_field(key)} must be {bound}")
    return value


def _number(spec: dict[str, Any], key: str, high: float) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{_field(key)} must be a number")
    if not 0 <= value <= high:
        raise bad_request(f"{_field(key)} must be between 0 and {high:g}")
    return float(value)


def _flag(spec: dict[str, Any], key: str) -> bool:
    value = spec.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{_field(key)} must be a boolean")
    return value


def parse_faults(metadata: Any) -> Faults:
    """Read `metadata.simulate` from a run body's (already type-checked) metadata."""
    spec = (metadata or {}).get("simulate")
    if spec is None:
        return Faults()
    if not isinstance(spec, dict):
        raise bad_request("metadata.simulate must be an object")

    status = _int(spec, "status", 0)
    if status is not None and status not in SIMULATED_STATUSES:
        allowed = ", ".join(map(str, SIMULATED_STATUSES))
        raise bad_request(f"{_field('status')} must be one of {allowed}")

    run_status = spec.get("runStatus", "completed")
    if run_status not in RUN_STATUSES:
        raise bad_request(f"{_field('runStatus')} must be one of {', '.join(RUN_STATUSES)}")

    omit = spec.get("omitUsageFields", [])
    if not isinstance(omit, list) or not all(isinstance(name, str) for name in omit):
        raise bad_request(f"{_field('omitUsageFields')} must be a list of strings")

    retry_after = _int(spec, "retryAfter", 0, 86_400)
    pending_lookups = _int(spec, "pendingLookups", 0, 1000)
    return Faults(
        status=status,
        retry_after=2 if retry_after is None else retry_after,
        hang_seconds=_number(spec, "hangSeconds", 3600) or 0.0,
        drip_ms=_number(spec, "dripMs", 60_000),
        deltas=_int(spec, "deltas", 1, MAX_DELTAS),
        cut_after=_int(spec, "cutAfter", 0),
        error_after=_int(spec, "errorAfter", 0),
        keep_alive=_flag(spec, "keepAlive"),
        unknown_frames=_flag(spec, "unknownFrames"),
        no_event_line=_flag(spec, "noEventLine"),
        multiline_data=_flag(spec, "multilineData"),
        non_json_frame=_flag(spec, "nonJsonFrame"),
        done=_flag(spec, "done"),
        run_status=run_status,
        omit_usage_fields=tuple(omit),
        stamp_frames=_flag(spec, "stampFrames"),
        pending_lookups=2 if pending_lookups is None else pending_lookups,
    )
