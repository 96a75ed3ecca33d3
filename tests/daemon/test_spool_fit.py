"""spool_fit: spool size settings against the file system they live on (fake statvfs)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from tstoraged.spool import segment_size_for, spool_fit

MiB = 1 << 20


def fake_statvfs(total: int, free: int):  # type: ignore[no-untyped-def]
    return lambda path: SimpleNamespace(
        f_blocks=total // 4096, f_bavail=free // 4096, f_frsize=4096
    )


def test_fitting_settings_have_no_problems(tmp_path: Path) -> None:
    fit = spool_fit(
        tmp_path, max_size=64 * MiB, min_free_space=MiB, statvfs=fake_statvfs(1024 * MiB, 512 * MiB)
    )
    assert fit.problems == []
    assert fit.capacity == 64 * MiB
    assert fit.segment_size == 4 * MiB


def test_defaults_on_a_20_mib_disk_name_both_settings_and_size_segments_to_the_disk(
    tmp_path: Path,
) -> None:
    fit = spool_fit(
        tmp_path / "not" / "yet",
        max_size=1024 * MiB,
        min_free_space=100 * MiB,
        statvfs=fake_statvfs(20 * MiB, 19 * MiB),
    )
    text = "\n".join(fit.problems)
    assert "min_free_space = 100.0 MiB is not below" in text
    assert "max_size = 1.0 GiB cannot fit" in text
    assert "20.0 MiB" in text
    # A floor the file system cannot have would block every append for good: 5 % instead.
    assert fit.effective_min_free_space == MiB
    assert "keeps 1.0 MiB free instead" in text
    assert fit.capacity == 18 * MiB


def test_max_size_beyond_the_free_space_is_reported_with_the_real_capacity(tmp_path: Path) -> None:
    fit = spool_fit(
        tmp_path,
        max_size=1024 * MiB,
        min_free_space=2 * MiB,
        statvfs=fake_statvfs(100 * MiB, 50 * MiB),
    )
    assert len(fit.problems) == 1
    assert "full at about 48.0 MiB" in fit.problems[0]
    # Segments follow what the spool can hold, not max_size: 3 MiB, not 64 MiB.
    assert fit.segment_size == 3 * MiB


def test_segments_already_in_the_spool_count_as_room(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001.seg").write_bytes(b"x" * (10 * MiB))
    fit = spool_fit(
        tmp_path, max_size=20 * MiB, min_free_space=0, statvfs=fake_statvfs(100 * MiB, 10 * MiB)
    )
    assert fit.spool_bytes == 10 * MiB
    assert fit.problems == []


def test_segment_size_bounds() -> None:
    assert segment_size_for(1 << 40) == 64 * MiB
    assert segment_size_for(1 * MiB) == 256 << 10
    assert segment_size_for(100 << 10) == 100 << 10  # never above max_size


def test_real_statvfs_of_this_directory(tmp_path: Path) -> None:
    fit = spool_fit(tmp_path, max_size=MiB, min_free_space=0)
    assert fit.filesystem_bytes >= fit.free_bytes > 0
    assert os.path.isdir(tmp_path)
