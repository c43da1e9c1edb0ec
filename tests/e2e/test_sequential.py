"""Sequential requests, end to end: seq/<k>/ metrics and the plot of a CLI run."""

import json
import re

import pytest
from PIL import Image

from tests.benchmarks.test_tofu import SMALL_TOFU_ARGS
from tests.conftest import SHARED, needs_shared, run_cli
from tests.legacy_directions import assert_directions_as_before

NEWS = SHARED / "muse" / "news"
# A small aligned MUSE-News subset (as +exp=muse_smollm, smaller) on the tiny model.
SMALL_MUSE_ARGS = [
    "+exp=smoke",
    "benchmark=muse",
    f"benchmark.path={NEWS}",
    "benchmark.retain_corpus=privleak/retain",
    "benchmark.align_to_eval=true",
    "benchmark.chunk_words=48",
    "benchmark.prompt_words=8",
    "benchmark.knowmem_limit=2",
    "benchmark.verbmem_limit=1",
    "benchmark.privleak_limit=3",
    "benchmark.verbmem_prompt_words=16",
    "benchmark.privleak_max_words=24",
    "benchmark.knowmem_max_new_tokens=4",
    "benchmark.verbmem_max_new_tokens=6",
    "benchmark.n_reference=2",
    "benchmark.retain_reference_auc=0.5",
]


def run_dir_of(tmp_path):
    (metrics_file,) = (tmp_path / "out").rglob("metrics.json")
    return metrics_file.parent


def test_three_requests_write_seq_metrics_and_the_plot(tmp_path):
    result = run_cli(
        ["+exp=smoke", "method.requests=[[person_00],[person_01],[person_02]]"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "out" / "toy" / "tiny" / "lunar" / "seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for k in (1, 2, 3):
        for key in ("forget/rouge1_recall", "retain/rouge1_recall", "deviation_score"):
            assert f"seq/{k}/{key}" in metrics
        assert f"seq/{k}/request_{k}/forget/rouge1_recall" in metrics
    assert "seq/4/deviation_score" not in metrics
    assert metrics["data/n_forget"] == 6 and metrics["data/n_retain"] == 2
    assert metrics["deviation_score"] == metrics["seq/3/deviation_score"]
    directions = json.loads((run_dir / "metric_directions.json").read_text())
    assert directions["seq/2/request_1/forget/rouge1_recall"] is False
    assert directions["seq/3/retain/rouge1_recall"] is True
    assert_directions_as_before(metrics, directions)
    with Image.open(run_dir / "sequential.png") as image:
        assert image.size[0] > 500


def assert_request_directions(metrics: dict, directions: dict) -> None:
    """A request's share takes its metric's direction; the other keys keep the old table's."""
    shares = {key for key in metrics if re.match(r"seq/\d+/request_\d+/", key)}
    assert shares
    for key in shares:
        assert directions[key] is directions[key.split("/", 3)[3]], key
    assert_directions_as_before(
        {k: v for k, v in metrics.items() if k not in shares},
        {k: v for k, v in directions.items() if k not in shares},
    )


def request_lines(run_dir) -> list[str]:
    log = (run_dir / "lunar_exp.log").read_text()
    return re.findall(r"Sequential request (\d/\d: forget .*)", log)


@needs_shared()
def test_tofu_requests_forget_one_author_each_against_the_whole_retain_split(tmp_path):
    requests = "method.requests=[[forget_author_001],[forget_author_000]]"
    args = [*SMALL_TOFU_ARGS, "benchmark.forget_authors=2", "benchmark.retain_reference=finetune"]
    result = run_cli([*args, requests, "attack=[layer_skip]"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(tmp_path)
    # request 1 forgets the second author's 20 questions; the 20 retain questions stay retain
    assert request_lines(run_dir) == [
        "1/2: forget ['forget_author_001'] (20 forget, 20 retain items)",
        "2/2: forget ['forget_author_000'] (20 forget, 20 retain items)",
    ]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    directions = json.loads((run_dir / "metric_directions.json").read_text())
    for k in (0, 1, 2):  # seq/0/request_<j>/: each author's share before the first request
        for key in ("forget/rouge1_recall", "forget_quality", "model_utility", "privleak"):
            assert k == 0 or metrics[f"seq/{k}/{key}"] is not None
        for j in (1, 2):
            for key in ("forget/rouge1_recall", "forget/truth_ratio", "forget_quality"):
                assert isinstance(metrics[f"seq/{k}/request_{j}/{key}"], float)
            assert 0 <= metrics[f"seq/{k}/request_{j}/mia/min_k_auc"] <= 1
    assert directions["seq/1/request_2/forget_quality"] is True
    assert directions["seq/2/request_1/forget/rouge1_recall"] is False
    assert "seq/3/forget_quality" not in metrics
    # the last request's evaluation is the run's; the attack runs after it on both authors
    assert metrics["forget_quality"] == metrics["seq/2/forget_quality"]
    assert metrics["data/n_forget"] == 40 and "attack/layer_skip/forget_quality" in metrics
    assert_request_directions(metrics, directions)
    with Image.open(run_dir / "sequential.png") as image:
        assert image.size[0] > 1000  # the third panel: forget quality, model utility, min-k AUC


@needs_shared()
def test_muse_requests_forget_document_batches(tmp_path):
    result = run_cli([*SMALL_MUSE_ARGS, "method.requests=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(tmp_path)
    lines = request_lines(run_dir)
    assert [line[:3] for line in lines] == ["1/2", "2/2"]
    named = [re.findall(r"forget:doc\d+", line) for line in lines]
    assert named[0] and named[1] and not set(named[0]) & set(named[1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for k in (1, 2):
        for key in ("forget/knowmem_rougeL_f1", "forget/verbmem_rougeL_f1", "privleak"):
            assert metrics[f"seq/{k}/{key}"] is not None
    shares = {key.split("/")[2] for key in metrics if re.match(r"seq/2/request_\d/", key)}
    assert shares == {"request_1", "request_2"}  # each batch holds some scored item
    assert metrics["data/n_forget"] == sum(
        int(m) for m in re.findall(r"\((\d+) forget", "".join(lines))
    )
    directions = json.loads((run_dir / "metric_directions.json").read_text())
    assert_request_directions(metrics, directions)
    assert (run_dir / "sequential.png").is_file()


@pytest.mark.parametrize(
    ("request_arg", "message"),
    [
        ("method.requests=[[forget_author_005]]", "unknown forget authors"),
        ("method.requests=[[forget_author_000]]", "leaves the forget authors forget_author_001"),
    ],
)
@needs_shared()
def test_bad_tofu_requests_fail_before_any_training(tmp_path, request_arg, message):
    args = [*SMALL_TOFU_ARGS, "benchmark.forget_authors=2", request_arg]
    result = run_cli(args, tmp_path, timeout=120)
    assert result.returncode != 0 and message in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))
