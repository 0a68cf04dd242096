"""When an event happened: the client's clock corrected for skew, and the range omniseg accepts.

A device's clock can be off by minutes, hours or years (a phone reset to 1970, a browser set to another
day). Segment corrects it with the call's own two client readings: the client stamped the event at
``timestamp`` and sent it at ``sentAt``, both on the same wrong clock, so their difference is true; the
collector's clock says when it arrived. The event happened at::

    receivedAt - (sentAt - timestamp)

omniseg applies that correction at the collector when ``sentAt`` and ``receivedAt`` differ by more than
:data:`SKEW_TOLERANCE`; within it the client's clock is taken as right (the difference is then network
latency, and correcting would only move well-kept timestamps by it). The client's reading stays in
``originalTimestamp``. Imports are never corrected: an imported ``sentAt`` is when the row was first
sent, not now.

After correction, an event time must lie between :data:`EARLIEST` and :data:`MAX_AHEAD` after receipt:
ClickHouse stores times as seconds since 1970 (18.16 turns later years into 1970), and an event from
the future would make a person "last seen" in it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SKEW_TOLERANCE = timedelta(seconds=1)
MAX_AHEAD = timedelta(hours=24)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def corrected_timestamp(timestamp: datetime, sent_at: datetime | None, received_at: datetime) -> datetime:
    """``timestamp`` moved by the client's clock error (``received_at - sent_at``) when it exceeds
    :data:`SKEW_TOLERANCE`; unchanged without ``sent_at`` or within the tolerance."""
    if sent_at is None:
        return timestamp
    skew = received_at - sent_at
    if abs(skew) <= SKEW_TOLERANCE:
        return timestamp
    try:
        return timestamp + skew
    except OverflowError:
        # Beyond datetime's years 1-9999: the bound check below refuses it with a reason.
        return datetime.max.replace(tzinfo=UTC) if skew > timedelta(0) else datetime.min.replace(tzinfo=UTC)


def out_of_range(timestamp: datetime, received_at: datetime) -> str | None:
    """Why ``timestamp`` cannot be an event time for a call received at ``received_at``, or None."""
    if timestamp < EARLIEST:
        return f"{_iso(timestamp)} is before 1970-01-01T00:00:00Z, the earliest time ClickHouse stores"
    if timestamp - received_at > MAX_AHEAD:
        hours = int(MAX_AHEAD.total_seconds() // 3600)
        return (
            f"{_iso(timestamp)} is more than {hours} hours after the call was received "
            f"({_iso(received_at)}); send the time the event happened"
        )
    return None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
