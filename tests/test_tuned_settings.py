import logging

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from lunar_exp.bookkeeping.tuned_settings import missing_tuned_setting, warn_if_untuned
from tests.conftest import CONF, compose_config


@pytest.fixture
def in_app():
    """Compose like a running app: Hydra's config loader and HydraConfig both set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):

        def compose_as_app(overrides):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            return cfg

        yield compose_as_app
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        (["method=wga", "benchmark=tofu"], "wga_tofu"),
        (["method=altpo", "benchmark=muse"], "altpo_muse"),
        (["method=wga"], None),  # conf/tuned/wga_synthetic.yaml
        (["method=npo", "benchmark=tofu"], None),  # conf/tuned/npo_tofu.yaml
        (["method=rmu", "model=tiny", "benchmark=tofu"], None),  # conf/tuned_model/rmu_tiny.yaml
        (["method=wga", "benchmark=tofu", "method.loop.lr=3e-5"], None),  # the user chose
        (["method=lunar", "benchmark=tofu"], None),  # no training loop
        (["method=none", "benchmark=tofu"], None),
    ],
)
def test_missing_tuned_setting(in_app, overrides, missing):
    assert missing_tuned_setting(in_app(overrides)) == missing


def test_an_untuned_gradient_method_warns_once_naming_the_file_and_the_fix(in_app, caplog):
    cfg = in_app(["method=satimp", "benchmark=tofu"])
    with caplog.at_level(logging.WARNING):
        warn_if_untuned(cfg)
    [record] = caplog.records
    assert "conf/tuned/satimp_tofu.yaml" in record.message
    assert "lr 1e-05, 5 epochs" in record.message
    assert "Fix:" in record.message


def test_a_tuned_method_does_not_warn(in_app, caplog):
    cfg = in_app(["method=satimp"])
    with caplog.at_level(logging.WARNING):
        warn_if_untuned(cfg)
    assert not caplog.records


def test_outside_an_app_nothing_is_decided():
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()
    assert missing_tuned_setting(compose_config(["method=wga", "benchmark=tofu"])) is None
