"""Every benchmark checks its counts and fractions when built, naming the setting and the fix."""

import re

import pytest

from lunar_exp.benchmarks.muse.benchmark import MUSEBenchmark
from lunar_exp.benchmarks.qa.qa_json import QAJsonBenchmark
from lunar_exp.benchmarks.tofu.benchmark import TofuBenchmark
from lunar_exp.benchmarks.wmdp.benchmark import WMDPBenchmark


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
