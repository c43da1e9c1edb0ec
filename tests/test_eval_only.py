"""Evaluation only (`method=none`) and the identity its cached evaluation is keyed by (issue 18).

The end-to-end acceptance (a saved unlearned model scores as its run; the second scoring is
cached; a changed weight file is not) is tests/e2e/test_eval_only.py.
"""

import os

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from omegaconf import OmegaConf

from lunar_exp.bookkeeping import cache, identity
from lunar_exp.methods import METHOD_CONFIGS, build_method, method_options
from lunar_exp.methods.none import NoUnlearning, check_attack_layers_given
from lunar_exp.pipeline import _check_evaluation_only
from tests.conftest import CONF, compose_config
from tests.test_exp_grid import EXPERIMENTS, build_parts

# ----- method=none in the registry --------------------------------------------------------------


def test_none_is_a_method_option_but_in_no_method_list_of_sweeps_and_scripts():
    assert (METHOD_CONFIGS / "none.yaml").is_file()
    assert "none" not in method_options()  # scripts/tune_baselines.py, bench_methods.py, tests
    assert method_options()[0] == "lunar" and "ga" in method_options()
    # +exp=sweep_methods sweeps the registry's glob, none excluded
    sweep = OmegaConf.load(CONF / "exp" / "sweep_methods.yaml").hydra.sweeper.params.method
    glob = OverridesParser.create().parse_override(f"method={sweep}").value()
    assert isinstance(glob, Glob)
    registry = sorted(p.stem for p in METHOD_CONFIGS.glob("*.yaml"))
    assert sorted(glob.filter(registry)) == sorted(method_options())


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_every_experiment_builds_with_method_none(exp):
    cfg = compose_config([f"+exp={exp}", "method=none", "attack=all"])
    parts = build_parts(cfg)
    assert isinstance(parts["method"], NoUnlearning)


def test_method_none_leaves_the_model_untouched(tiny_chat, toy_data):
    before = {k: v.clone() for k, v in tiny_chat.model.state_dict().items()}
    method = build_method(compose_config(["method=none"]).method)
    outcome = method.unlearn(tiny_chat, toy_data)
    assert not outcome.edited_layers and not outcome.tensors and outcome.control is None
    after = tiny_chat.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def attacks_of(overrides: list[str]) -> dict[str, object]:
    cfg = compose_config(["method=none", *overrides])
    parts = build_parts(cfg)
    return {k.removeprefix("attack/"): v for k, v in parts.items() if k.startswith("attack/")}


def test_attacks_aimed_at_the_edit_need_their_layers_with_method_none():
    with pytest.raises(ValueError) as err:
        check_attack_layers_given(attacks_of(["attack=all"]))
    message = str(err.value)
    names = ("layer_skip", "reverse_direction", "reverse_direction_recomputed")
    assert ", ".join(f"attack.{n}.layers" for n in names) + "=null means the layers" in message
    assert "method=none edits none. Fix: give the checkpoint's edited layers" in message
    assert "\n" not in message
    # given layers, they attack those; the other attacks need no method outcome
    given = attacks_of(["attack=[layer_skip,reverse_direction,quantize_int8,relearn]"])
    given["layer_skip"].layers = [1]  # type: ignore[attr-defined]
    given["reverse_direction"].layers = [1]  # type: ignore[attr-defined]
    check_attack_layers_given(given)


def test_method_none_takes_no_sequential_requests():
    with pytest.raises(ValueError, match="method=none unlearns nothing, so it takes no method"):
        _check_evaluation_only({}, [["person_00"]])
    _check_evaluation_only({}, None)


# ----- model identity ---------------------------------------------------------------------------


def count_hashing(monkeypatch) -> list:
    calls = []
    original = cache.sha256_of

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(cache, "sha256_of", counting)
    return calls


def test_a_file_is_hashed_once_then_read_from_the_memo(tmp_path, monkeypatch):
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights-1" * 100)
    calls = count_hashing(monkeypatch)
    first = identity.file_sha256(weights, tmp_path / "memo")
    assert identity.file_sha256(weights, tmp_path / "memo") == first
    assert len(calls) == 1 and len(list((tmp_path / "memo").iterdir())) == 1


def test_same_size_bytes_with_the_old_mtime_are_another_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    weights = model / "model.safetensors"
    weights.write_bytes(b"a" * 64)
    memo = tmp_path / "memo"
    first = identity.model_identity({"path": str(model)}, memo)
    stat = weights.stat()
    weights.write_bytes(b"b" * 64)  # same size, other bytes ...
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the old mtime
    assert weights.stat().st_size == stat.st_size
    second = identity.model_identity({"path": str(model)}, memo)
    assert first is not None and first.startswith("dir:") and second != first
    # a renamed copy of the same files is the same model
    moved = tmp_path / "moved"
    model.rename(moved)
    assert identity.model_identity({"path": str(moved)}, memo) == second


def test_a_gguf_file_is_identified_by_its_hash(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    found = identity.model_identity({"path": str(gguf)}, tmp_path / "memo")
    assert found == f"file:{cache.sha256_of(gguf)}"


def test_a_hub_id_is_identified_by_the_cached_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--name"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert identity.model_identity({"path": "org/name"}, tmp_path) == f"hub:org/name@{commit}"
    (repo / "refs" / "main").write_text("f" * 40)  # main moved to a commit not downloaded
    assert identity.model_identity({"path": "org/name"}, tmp_path) is None
    assert identity.model_identity({"path": "org/other"}, tmp_path) is None  # not cached


def test_the_tiny_model_is_its_config_and_unknown_models_have_no_identity(tmp_path):
    tiny = {"_target_": identity.TINY_TARGET, "seed": 0}
    assert identity.model_identity(tiny, tmp_path) == "tiny:config"
    assert identity.model_identity({"_target_": "x.y"}, tmp_path) is None


def test_the_key_keeps_the_settings_that_change_scores_and_drops_the_source():
    node = {"path": "/a", "package": None, "dtype": "bfloat16", "system_prompt": "s"}
    parts = identity.evaluation_key_parts(node, "dir:abc")
    assert parts == {"identity": "dir:abc", "settings": {"dtype": "bfloat16", "system_prompt": "s"}}


def test_an_empty_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no files. Fix: point model.path"):
        identity.model_identity({"path": str(tmp_path)}, tmp_path / "memo")
