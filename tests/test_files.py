"""Atomic writes: the destination holds the old content or the new, never a partial file."""
from __future__ import annotations

import numpy as np
import pytest

from mask_keras.files import atomic_path, atomic_write_text


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "metrics.json"
    atomic_write_text(p, "old\n")
    atomic_write_text(p, "new\n")
    assert p.read_text() == "new\n" and sorted(x.name for x in p.parent.iterdir()) == ["metrics.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    p = tmp_path / "model.keras"
    p.write_text("previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(p) as tmp:
            tmp.write_text("half a mod")
            raise RuntimeError("disk full")
    assert p.read_text() == "previous" and [x.name for x in tmp_path.iterdir()] == ["model.keras"]


def test_temp_keeps_the_suffix_and_is_unique(tmp_path):
    # numpy and Keras pick the format from the suffix; two writers never share a temp file
    with atomic_path(tmp_path / "cache.npy", fsync=False) as a, atomic_path(tmp_path / "cache.npy") as b:
        assert a.suffix == b.suffix == ".npy" and a != b and a.parent == tmp_path
        np.save(a, np.arange(3))
        np.save(b, np.arange(4))
    np.testing.assert_array_equal(np.load(tmp_path / "cache.npy"), np.arange(3))  # the last rename wins
    assert [x.name for x in tmp_path.iterdir()] == ["cache.npy"]
