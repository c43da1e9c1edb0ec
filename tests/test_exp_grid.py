"""Every experiment x every method composes and builds (issue 16, item 1), without loading a model.

`+exp=tofu_llama method=ga` once failed with `GA.__init__() got an unexpected keyword argument
'layers'`: the experiment set LUNAR's keys, which reached whichever method was chosen. Here each
`conf/exp/*.yaml` is composed with each method of the registry (`conf/method/*.yaml`, so methods
added later are covered) and `attack=all`, and the method, benchmark, fine-tuning stage, utility
and every attack are instantiated: their settings are validated when built, before any model or
data is loaded.
"""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lunar_exp.methods import build_method, method_options
from tests.conftest import CONF, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF / "exp").glob("*.yaml"))
# Groups an experiment may choose (defaults list) but never fill with keys of its own: a method's
# keys belong in conf/tuned/<method>_<benchmark>.yaml or conf/tuned_model/<method>_<model>.yaml.
METHOD_FREE = ("method", "train_loop")


def build_parts(cfg) -> dict[str, object]:
    """Instantiate every part of a composed run config that the pipeline builds first."""
    parts: dict[str, object] = {
        "method": build_method(cfg.method),
        "benchmark": instantiate(cfg.benchmark),
        "finetune": instantiate(cfg.finetune),
    }
    if cfg.get("utility"):
        parts["utility"] = instantiate(cfg.utility)
    for name, node in (cfg.get("attack") or {}).items():
        parts[f"attack/{name}"] = instantiate(node)
    return parts


@pytest.mark.parametrize("exp", EXPERIMENTS)
@pytest.mark.parametrize("method", method_options())
def test_every_experiment_builds_with_every_method(exp, method):
    cfg = compose_config([f"+exp={exp}", f"method={method}", "attack=all"])
    parts = build_parts(cfg)
    assert type(parts["method"]).__name__.lower() == method
    assert len([p for p in parts if p.startswith("attack/")]) == len(cfg.attack) > 0


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_files_set_no_method_keys(exp):
    node = OmegaConf.load(CONF / "exp" / f"{exp}.yaml")
    leaked = [key for key in METHOD_FREE if key in node]
    assert not leaked, (
        f"conf/exp/{exp}.yaml sets {leaked}: they reach every method of a sweep. "
        "Move them to conf/tuned/<method>_<benchmark>.yaml or conf/tuned_model/."
    )


def test_a_method_key_in_an_experiment_breaks_other_methods():
    # What the grid guards against: LUNAR's `layers` given to GA fails when GA is built.
    cfg = compose_config(["+exp=tofu_llama", "method=ga", "+method.layers=[17]"])
    with pytest.raises(Exception, match="layers"):
        build_parts(cfg)


GPU_EXPERIMENTS = ("tofu_llama", "muse_llama", "wmdp_zephyr")


@pytest.mark.parametrize("exp", GPU_EXPERIMENTS)
def test_gpu_sized_experiments_say_so(exp):
    # Each names the launcher presets it expects (docs/sweeps.md, GPU clusters).
    cfg = compose_config([f"+exp={exp}"])
    assert "gpu" in cfg.tags and cfg.model.dtype == "bfloat16"
    text = (CONF / "exp" / f"{exp}.yaml").read_text()
    assert "hydra/launcher=slurm_gpu" in text and "hydra/launcher=local_gpu" in text
