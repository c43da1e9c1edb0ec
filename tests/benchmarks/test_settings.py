"""Every benchmark checks its counts and fractions when built, naming the setting and the fix."""

import re
from dataclasses import fields

import pytest
from hydra.utils import get_method
from omegaconf import ListConfig, OmegaConf

from lunar_exp.benchmarks.muse.benchmark import MUSEBenchmark
from lunar_exp.benchmarks.qa.qa_json import QAJsonBenchmark
from lunar_exp.benchmarks.qa.synthetic import SyntheticBenchmark
from lunar_exp.benchmarks.tofu.benchmark import TofuBenchmark
from lunar_exp.benchmarks.utility.mmlu import MMLUUtility
from lunar_exp.benchmarks.wmdp.benchmark import WMDPBenchmark
from lunar_exp.settings import describe
from tests.conftest import CONF


def qa_json(**settings):
    return QAJsonBenchmark(path="data.json", forget_edges=["A_B"], **settings)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # Each of these used to fail late: a TypeError on slicing, or generation refusing
        # max_new_tokens=0 after the target model was fine-tuned.
        (lambda: TofuBenchmark(forget_authors="abc"), "benchmark.forget_authors='abc' is not an"),
        (lambda: TofuBenchmark(max_new_tokens=0), "benchmark.max_new_tokens=0 is out of range"),
        (lambda: TofuBenchmark(retain_authors=-3), "benchmark.retain_authors=-3 is out of range"),
        (lambda: TofuBenchmark(min_k=2), "benchmark.min_k=2 is out of range. Fix: use a value in"),
        (lambda: qa_json(eval_batch_size=0), "benchmark.eval_batch_size=0 is out of range"),
        (lambda: qa_json(n_abstain=-1), "benchmark.n_abstain=-1 is out of range"),
        (lambda: MUSEBenchmark(chunk_words=0), "benchmark.chunk_words=0 is out of range"),
        (lambda: MUSEBenchmark(forget_docs=-1), "benchmark.forget_docs=-1 is out of range"),
        (lambda: MUSEBenchmark(min_k=0.0), "benchmark.min_k=0.0 is out of range"),
        (lambda: WMDPBenchmark(limit=0), "benchmark.limit=0 is out of range"),
        (lambda: WMDPBenchmark(n_forget=2.5), "benchmark.n_forget=2.5 is not an integer"),
    ],
)
def test_bad_counts_fail_when_the_benchmark_is_built(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_optional_limits_accept_none():
    TofuBenchmark(forget_authors=None, retain_eval_limit=None, holdout_limit=None)
    MUSEBenchmark(forget_docs=None, knowmem_limit=None)
    WMDPBenchmark(limit=None, n_forget=None, max_documents=None)


def test_more_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match=re.escape("benchmark.n_entities=1: need at least 2")):
        SyntheticBenchmark(n_entities=1)
    with pytest.raises(ValueError, match=re.escape("benchmark.mode='offline': use auto, local")):
        WMDPBenchmark(mode="offline")
    with pytest.raises(ValueError, match=re.escape("utility.limit=0 is out of range")):
        MMLUUtility(limit=0)
    with pytest.raises(ValueError, match=re.escape("utility.mode='x': use auto, local or hub")):
        MMLUUtility(mode="x")
    with pytest.raises(ValueError, match=re.escape("benchmark.forget_edges='person_00' is not a")):
        SyntheticBenchmark(forget_edges="person_00")


COMPONENTS = [
    *sorted((CONF / "benchmark").glob("*.yaml")),
    *[p for p in sorted((CONF / "utility").glob("*.yaml")) if p.stem != "none"],
]


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_keys_are_the_settings_each_with_one_line_help(path):
    # The cached evaluations are keyed by these config keys: each is exactly one setting.
    node = OmegaConf.load(path)
    component = get_method(node._target_)
    assert {key for key in node if key != "_target_"} == {f.name for f in fields(component)}
    for line in describe(component, path.parent.name):
        assert line.split("): ", 1)[1].strip() and "\n" not in line, line


def test_derived_attributes_follow_the_settings():
    tofu = TofuBenchmark(retain_eval_limit=3, known_facts_limit=4, holdout_limit=5)
    assert tofu.limits == {"retain": 3, "known_facts": 4, "holdout": 5}
    muse = MUSEBenchmark(knowmem_limit=1, verbmem_limit=2, privleak_limit=0)
    assert (muse.limits.knowmem, muse.limits.verbmem, muse.limits.privleak) == (1, 2, 0)
    wmdp = WMDPBenchmark(n_forget=3, n_retain=None)
    assert wmdp.corpora["forget"][1] == 3 and wmdp.corpora["retain"][1] is None
    assert wmdp.suite.wmdp_subsets == ["bio", "cyber"] and wmdp.suite.owner == "benchmark"
    names = [b.name for b in (SyntheticBenchmark, qa_json(), tofu, muse, wmdp)]
    assert names == ["synthetic", "qa_json", "tofu", "muse", "wmdp"]
    assert SyntheticBenchmark(forget_edges=ListConfig(["person_03"])).forget_edges == ["person_03"]
