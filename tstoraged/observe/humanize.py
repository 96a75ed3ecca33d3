"""Short human renderings of counts, sizes and ages (status line, status table)."""

from __future__ import annotations

__all__ = ["human_age", "human_bytes", "human_count"]


def human_count(value: float) -> str:
    """``950`` -> ``"950"``, ``12345`` -> ``"12.3k"``, ``2.5e6`` -> ``"2.5M"``."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.1f}{suffix}"
    if isinstance(value, int) or value == int(value):
        return str(int(value))
    return f"{value:.1f}"


def human_bytes(value: float) -> str:
    """``512`` -> ``"512 B"``, ``4 * 2**20`` -> ``"4.0 MiB"`` (binary units, as in the config)."""
    size = float(value)
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or suffix == "GiB":
            return f"{int(size)} B" if suffix == "B" else f"{size:.1f} {suffix}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_age(seconds: float) -> str:
    """Render a duration: ``4.2`` -> ``"4s"``, ``125`` -> ``"2m05s"``, ``7300`` -> ``"2h01m"``."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
