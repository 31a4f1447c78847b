"""The one UTC clock and text form of time that plans, snapshots, exports and JSON logs are stamped with.

ISO 8601 to the second with a ``Z`` (``2026-01-31T09:30:00Z``): sortable, unambiguous in a pull request,
and what Terraform's and kubectl's machine output use. ``utc_epoch`` reads the same form back, and
tolerates fractional seconds written by other tools.
"""

from __future__ import annotations

import calendar
import time

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_text(moment: float | None = None) -> str:
    """``moment`` (seconds since the epoch; None: now) in the one UTC form."""
    return time.strftime(UTC_FORMAT, time.gmtime(moment))


def utc_now() -> str:
    return utc_text()


def utc_epoch(text: str) -> float:
    """Seconds since the epoch of a time in the UTC form."""
    return float(calendar.timegm(time.strptime(text.split(".")[0].rstrip("Z"), UTC_FORMAT.rstrip("Z"))))
