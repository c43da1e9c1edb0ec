import pytest

from lunar_exp.bookkeeping import cache


def test_entry_roundtrip_and_key_stability(tmp_path):
    target = tmp_path / "entry"
    cache.write_entry(target, lambda d: (d / "w.bin").write_bytes(b"abc"), {"x": 1})
    assert cache.read_entry(target, verify_hashes=True) == {"x": 1}
    assert cache.config_key({"a": 1, "b": 2}) == cache.config_key({"b": 2, "a": 1})
    assert cache.config_key({"a": 1}) != cache.config_key({"a": 2})


def test_truncated_or_corrupt_entry_is_rejected_and_removed(tmp_path):
    target = tmp_path / "entry"
    cache.write_entry(target, lambda d: (d / "w.bin").write_bytes(b"abcdef"), {})
    (target / "w.bin").write_bytes(b"abc")
    assert cache.read_entry(target) is None
    assert not target.exists()
    cache.write_entry(target, lambda d: (d / "w.bin").write_bytes(b"abcdef"), {})
    (target / "w.bin").write_bytes(b"abcxyz")
    assert cache.read_entry(target, verify_hashes=True) is None


def test_failed_fill_leaves_nothing(tmp_path):
    target = tmp_path / "entry"

    def fill(d):
        (d / "w.bin").write_bytes(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cache.write_entry(target, fill, {})
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
