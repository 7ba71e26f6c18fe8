"""metav1.Time as the API server writes it (RFC 3339, seconds, UTC), both ways, in one place."""

import datetime


def rfc3339(now: datetime.datetime) -> str:
    """A condition's or a status record's time, as metav1.Time serialises it (seconds, UTC)."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: object) -> datetime.datetime | None:
    """A time read from an object the API server holds; None when absent or not a time (status is writable by
    others, and Events come from many writers)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
