"""Security, end to end: a run with save_model=true leaves no pickle anywhere."""

from tests.conftest import run_cli
from tests.test_security import PICKLE_SUFFIXES, _looks_pickled


def test_caches_and_saved_models_hold_no_pickles(tmp_path):
    result = run_cli(["+exp=smoke", "save_model=true"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    weights = [p.name for p in files if p.suffix == ".safetensors"]
    assert {"model.safetensors", "unlearn_vectors.safetensors"} <= set(weights)
    assert [p for p in files if p.suffix in PICKLE_SUFFIXES or _looks_pickled(p)] == []
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    # Besides entries, only the empty lock files that runs take turns on (cache.claim).
    locks = [p for p in cached if p.suffix == ".lock"]
    assert all(p.stat().st_size == 0 for p in locks)
    assert {p.suffix for p in cached if p not in locks} <= {".safetensors", ".json"}
