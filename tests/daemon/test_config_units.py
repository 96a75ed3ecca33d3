"""Human units: durations and byte sizes parse, refuse bad units clearly, and print back."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from tstoraged.config import ByteSize, Duration
from tstoraged.config.units import (
    format_byte_size,
    format_duration,
    parse_byte_size,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("2d", 172800.0),
        (" 10 s ", 10.0),
        ("10", 10.0),
        (7, 7.0),
        (0.25, 0.25),
        ("0", 0.0),
    ],
)
def test_durations_parse_to_float_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["10 sec", "5x", "ms", "-1s", -3, True, "", "1h garbage", [1]])
def test_bad_durations_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="duration like '500ms'"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4MiB", 4 * 2**20),
        ("512KiB", 512 * 1024),
        ("1GB", 10**9),
        ("1gib", 2**30),
        ("100", 100),
        ("1.5KiB", 1536),
        (4096, 4096),
        ("10 MB", 10**7),
        ("7b", 7),
    ],
)
def test_byte_sizes_parse_to_int_bytes(text, size):
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("bad", ["4 MiBs", "lots", "-1", -5, "1.5", True, 1.5])
def test_bad_byte_sizes_are_refused(bad):
    with pytest.raises(ValueError, match=r"size like|whole number|non-negative"):
        parse_byte_size(bad)


def test_bad_unit_error_lists_the_units():
    with pytest.raises(ValueError, match=r"KiB, .*MiB"):
        parse_byte_size("4 MiBs")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (30.0, "30s"), (300.0, "5m"), (5400.0, "90m"), (0.0, "0s"), (1.25, "1250ms")],
)
def test_durations_print_in_the_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("size", "text"), [(4 * 2**20, "4MiB"), (1536, "1536"), (2**30, "1GiB"), (3072, "3KiB")]
)
def test_sizes_print_in_the_largest_binary_unit(size, text):
    assert format_byte_size(size) == text
    assert parse_byte_size(text) == size


class Limits(BaseModel):
    timeout: Duration
    size: ByteSize


def test_annotated_types_validate_and_dump_human_units_in_json():
    limits = Limits.model_validate({"timeout": "1m", "size": "8MiB"})
    assert (limits.timeout, limits.size) == (60.0, 8 * 2**20)
    assert limits.model_dump() == {"timeout": 60.0, "size": 8 * 2**20}
    assert limits.model_dump(mode="json") == {"timeout": "1m", "size": "8MiB"}


def test_annotated_types_report_errors_at_the_field():
    with pytest.raises(ValidationError) as info:
        Limits.model_validate({"timeout": "soon", "size": "big"})
    assert [error["loc"] for error in info.value.errors()] == [("timeout",), ("size",)]
