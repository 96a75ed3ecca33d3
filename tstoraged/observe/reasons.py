"""The fixed sets of ``reason`` label values of the record and retry counters.

Reasons are free text where they are written (the dead-letter file keeps the whole reason,
``/status`` the last one); a metric label must come from a small fixed set, or every column
number and every value would make a time series of its own. These functions map any reason
to its label; what they do not recognise is ``other``.
"""

from __future__ import annotations

import re

__all__ = [
    "DEAD_LETTER_REASONS",
    "DROP_REASONS",
    "MAPPING_FAILED",
    "REJECT_REASONS",
    "RETRY_REASONS",
    "dead_letter_reason",
    "drop_reason",
    "reject_reason",
    "retry_reason",
]

MAPPING_FAILED = "mapping_failed"
"""Fields that the source's mapping could not turn into a record (missing, out of range)."""

REJECT_REASONS = (
    "line_too_long",
    "undecodable",
    "wrong_field_count",
    "parse_error",
    MAPPING_FAILED,
    "invalid_input",
)
"""Labels of ``tstoraged_records_rejected_total``: input a source could not use."""

DEAD_LETTER_REASONS = (
    *REJECT_REASONS,
    "invalid_record",
    "refused",
    "gave_up",
    "write_failed",
    "undecodable_batch",
    "other",
)
"""Labels of ``tstoraged_records_dead_lettered_total``: everything written to the file."""

DROP_REASONS = ("spool_full", "other")
"""Labels of ``tstoraged_records_dropped_total``."""

RETRY_REASONS = ("disconnected", "connection_refused", "timeout", "tls_error", "connection_error")
"""Labels of ``tstoraged_write_retries_total`` (and ``other``)."""

_REJECT_PATTERNS = (
    ("line_too_long", re.compile(r"longer than|too long", re.IGNORECASE)),
    ("undecodable", re.compile(r"undecodable|decode", re.IGNORECASE)),
    ("wrong_field_count", re.compile(r"expected \d+ fields", re.IGNORECASE)),
    ("parse_error", re.compile(r"^(csv|json)\b|not a json|header|invalid literal|pars", re.I)),
)
_DEAD_LETTER_PREFIXES = (
    ("invalid record", "invalid_record"),
    ("refused", "refused"),
    ("gave up", "gave_up"),
    ("write failed", "write_failed"),
    ("undecodable batch", "undecodable_batch"),
    ("undecodable spooled batch", "undecodable_batch"),
)
_RETRY_PATTERNS = (
    ("disconnected", re.compile(r"DISCONNECTED")),
    ("connection_refused", re.compile(r"refused", re.IGNORECASE)),
    ("timeout", re.compile(r"timeout|timed out", re.IGNORECASE)),
    ("tls_error", re.compile(r"ssl|tls|certificate", re.IGNORECASE)),
    ("connection_error", re.compile(r"OSError|ConnectionError|reset|broken pipe|unreachable")),
)


def reject_reason(reason: str) -> str:
    """The label of a source's reject reason (``"undecodable bytes ... column 7"`` ->
    ``undecodable``); a label of the set passes unchanged."""
    if reason in REJECT_REASONS or reason.startswith(MAPPING_FAILED):
        return MAPPING_FAILED if reason.startswith(MAPPING_FAILED) else reason
    for label, pattern in _REJECT_PATTERNS:
        if pattern.search(reason):
            return label
    return "invalid_input"


def dead_letter_reason(reason: str) -> str:
    """The label of a dead-letter reason: the writer's own, or a source's reject."""
    if reason in DEAD_LETTER_REASONS:
        return reason
    lowered = reason.lower()
    for prefix, label in _DEAD_LETTER_PREFIXES:
        if lowered.startswith(prefix):
            return label
    return "other"


def drop_reason(reason: str) -> str:
    """The label of a drop reason (``"spool full (drop_oldest)"`` -> ``spool_full``)."""
    return "spool_full" if reason.replace("_", " ").startswith("spool full") else "other"


def retry_reason(reason: str) -> str:
    """The label of a transient write failure (``"OSError: ... Connection refused"``)."""
    for label, pattern in _RETRY_PATTERNS:
        if pattern.search(reason):
            return label
    return "other"
