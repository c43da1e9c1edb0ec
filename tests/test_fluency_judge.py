"""The fluency judge a saved checkpoint records (lunar_exp/fluency.py)."""

import logging

import pytest
from omegaconf import OmegaConf

from lunar_exp import fluency


def model_cfg(path):
    return OmegaConf.create({"_target_": "x", "name": "hf", "path": str(path), "device": "cpu"})


def test_a_recorded_judge_is_read_back(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    judge = fluency.run_judge(OmegaConf.create({"name": "tiny", "dtype": "float32"}), str(target))
    fluency.record_judge(tmp_path, judge)
    assert fluency.recorded_judge(model_cfg(tmp_path)) == judge


def test_no_record_or_no_path_means_the_checkpoint_judges_itself(tmp_path):
    assert fluency.recorded_judge(model_cfg(tmp_path)) is None
    assert fluency.recorded_judge(OmegaConf.create({"name": "smollm2", "path": None})) is None


def test_a_record_naming_a_cleared_target_is_ignored_with_a_warning(tmp_path, caplog):
    judge = fluency.Judge(target_path=str(tmp_path / "gone"), model={"name": "tiny"})
    fluency.record_judge(tmp_path, judge)
    with caplog.at_level(logging.WARNING):
        assert fluency.recorded_judge(model_cfg(tmp_path)) is None
    assert "is gone" in caplog.text


def test_a_broken_record_is_one_clear_error(tmp_path):
    (tmp_path / fluency.JUDGE_FILE).write_text('{"model": {}}')
    with pytest.raises(ValueError, match="not a fluency-judge record.*Fix: delete it"):
        fluency.recorded_judge(model_cfg(tmp_path))
