"""The operator's wall clock: one timestamp format for conditions and Events.

Pure layers (spec, builders, status) never read a clock; the reconciler passes
``utc_now()`` in, so status stays a pure function of what was observed.
"""

from __future__ import annotations

import datetime as dt


def utc_now() -> str:
    """Now, in RFC 3339 at whole seconds (metav1.Time's wire format): 2026-01-02T03:04:05Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
