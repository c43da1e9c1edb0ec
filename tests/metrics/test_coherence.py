"""Coherence metrics: degeneration by hand, coherent refusals, fluency under the target model."""

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from lunar_exp import pipeline
from lunar_exp.benchmarks.qa.evaluation import evaluate_qa, split_directions
from lunar_exp.metrics.coherence import (
    coherence_metrics,
    distinct_n,
    fluency_nll,
    has_loop,
    is_coherent_refusal,
    is_degenerate,
    seq_rep_n,
    words,
)
from lunar_exp.metrics.text import is_refusal
from lunar_exp.models import tiny_llama

# The default run's degenerate refusal, as issue 18 quotes it.
KENPUS = (
    "I'm sorry, but I don't have any information about Kenpus Ken Ken Ken Ken Ken Ken Ken Ken K"
)
FLUENT_REFUSAL = "I'm sorry, but I don't have any information about Vorbus Monroublv."


def test_words_keep_inner_apostrophes_and_drop_punctuation():
    assert words("I'm sorry, but I don't.") == ["i'm", "sorry", "but", "i", "don't"]


def test_seq_rep_2_by_hand():
    # 19 words: i'm sorry but i don't have any information about kenpus, 8 x ken, k.
    # 18 bigrams; distinct: the 9 from "i'm sorry" to "about kenpus", "kenpus ken", "ken ken",
    # "ken k" = 12, so 6 of 18 repeat an earlier bigram: seq-rep-2 = 6/18 = 1/3.
    assert seq_rep_n(KENPUS) == pytest.approx(1 / 3)
    # 10 words, 9 bigrams, the second sentence's 4 bigrams all repeat: 4/9.
    assert seq_rep_n("She works as a locksmith. She works as a locksmith.") == pytest.approx(4 / 9)
    assert seq_rep_n("She was born in Lunwick.") == 0.0
    assert seq_rep_n("Yes.") == 0.0  # one word: no bigram, nothing repeated
    assert seq_rep_n("") == 0.0
    # unigrams: "ken" x 8 gives 7 repeats and nothing else repeats: 7/19
    assert seq_rep_n(KENPUS, n=1) == pytest.approx(7 / 19)


def test_distinct_2_by_hand():
    # bigrams "a b", "b c", "a b", "b d": 3 distinct of 4
    assert distinct_n(["a b c", "a b d"]) == pytest.approx(0.75)
    assert distinct_n([KENPUS]) == pytest.approx(12 / 18)
    assert distinct_n(["Yes.", "No."]) == 1.0  # no bigrams at all: nothing repeated


def test_loops_are_found_by_span_and_repeat_count():
    assert has_loop(words("Zallav Zallav Zallav"))
    assert has_loop(words("a b a b a b"))  # a two-word span, three times
    assert not has_loop(words("Zallu Zallu"))  # twice is not a loop
    assert not has_loop(words("a b c d e a b c d e a b c d e"))  # a 5-word span: too long


def test_degenerate_answers_by_threshold_and_by_loop():
    assert is_degenerate(KENPUS)  # seq-rep-2 1/3 > 0.1
    # 13 words, 12 bigrams, 1 repeat: seq-rep-2 1/12 = 0.083 <= 0.1, but "Zallav" x 3 loops
    short_loop = "I'm sorry, but I don't have any information about 'Vrou Zallav Zallav Zallav."
    assert seq_rep_n(short_loop) == pytest.approx(1 / 12)
    assert is_degenerate(short_loop)
    # a fluent two-sentence refusal repeats "i don't" once: 1/15 = 0.067, no loop
    fluent = "I'm sorry, but I don't have any information about her. I don't know who she is."
    assert seq_rep_n(fluent) == pytest.approx(1 / 15)
    assert not is_degenerate(fluent)


def test_the_issue_example_is_a_refusal_but_not_a_coherent_one():
    assert is_refusal(KENPUS)
    assert not is_coherent_refusal(KENPUS)
    assert is_coherent_refusal(FLUENT_REFUSAL)
    assert not is_coherent_refusal("He was born in 1948.")  # coherent, but no refusal
    metrics = coherence_metrics("forget", [KENPUS, FLUENT_REFUSAL])
    assert metrics["forget/coherent_refusal_rate"] == 0.5
    assert metrics["forget/degeneration"] == pytest.approx((1 / 3 + 0.0) / 2)


def test_qa_evaluation_reports_coherence_with_directions(tiny_target, toy_bench_data):
    result = evaluate_qa(tiny_target, toy_bench_data.eval_sets, 8, 8)
    for split in ("forget", "retain"):
        for name in ("degeneration", "distinct_2", "coherent_refusal_rate"):
            assert f"{split}/{name}" in result.metrics
        assert split_directions(split).keys() <= result.directions.keys()
        for record in result.generations[split]:
            assert record["degeneration"] == seq_rep_n(str(record["response"]))
            assert record["coherent_refusal"] == is_coherent_refusal(str(record["response"]))
    # a coherent refusal is better on forget and worse on retain, as refusals are
    assert result.directions["forget/coherent_refusal_rate"] is True
    assert result.directions["retain/coherent_refusal_rate"] is False


def _unlearned_copy(chat, seed: int = 1):
    """A model whose weights moved away from ``chat``'s (a stand-in for an unlearned model)."""
    changed = tiny_llama(seed=0)
    changed.model.load_state_dict(chat.model.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in changed.model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return changed


def _stages(chat, model_cfg: dict | None = None):
    """The parts of a run that the pipeline's fluency stage reads."""
    return SimpleNamespace(
        chat=chat,
        method=object(),  # an unlearning method: the target model must be reloaded
        bench=SimpleNamespace(generation=SimpleNamespace(batch_size=8)),
        cfg=OmegaConf.create({"model": model_cfg or {}}),
        seconds={},
    )


def _target_scores(target, records) -> list[float]:
    """The target model's fluency NLL of each record's answer (every answer here is non-empty)."""
    scores = fluency_nll(target.model, target.tokenizer, target.system_prompt, records, 8)
    return [float(s) for s in scores if s is not None]


def test_fluency_is_scored_by_the_cached_target_model(tiny_target, toy_bench_data, tmp_path):
    tiny_target.model.save_pretrained(tmp_path / "target", safe_serialization=True)
    before = evaluate_qa(tiny_target, toy_bench_data.eval_sets, 8, 8)
    unlearned = _unlearned_copy(tiny_target)
    after = evaluate_qa(unlearned, toy_bench_data.eval_sets, 8, 8)
    own = _target_scores(unlearned, after.generations["forget"])
    run = _stages(unlearned)

    pipeline._score_fluency(run, str(tmp_path / "target"), before, after)  # type: ignore[arg-type]

    by_target = _target_scores(tiny_target, after.generations["forget"])
    scored = [r["fluency_nll"] for r in after.generations["forget"]]
    assert scored == pytest.approx(by_target)
    assert scored != pytest.approx(own)  # the unlearned model would have judged differently
    assert after.metrics["forget/fluency_nll"] == pytest.approx(sum(by_target) / len(by_target))
    before_retain = _target_scores(tiny_target, before.generations["retain"])
    assert before.metrics["retain/fluency_nll"] == pytest.approx(
        sum(before_retain) / len(before_retain)
    )
    assert after.directions["forget/fluency_nll"] is False
    assert run.seconds["fluency"] > 0


def test_without_fine_tuning_the_configured_model_is_the_target(toy_bench_data):
    target = tiny_llama(seed=0)  # what model=tiny builds
    unlearned = _unlearned_copy(target)
    before = evaluate_qa(target, toy_bench_data.eval_sets, 8, 8)
    after = evaluate_qa(unlearned, toy_bench_data.eval_sets, 8, 8)
    model_cfg = {"_target_": "lunar_exp.models.tiny_llama", "seed": 0}

    pipeline._score_fluency(_stages(unlearned, model_cfg), "", before, after)  # type: ignore[arg-type]

    scored = [r["fluency_nll"] for r in after.generations["retain"]]
    assert scored == pytest.approx(_target_scores(target, after.generations["retain"]))


def test_an_empty_answer_has_no_fluency_score(tiny_target):
    records = [
        {"question": "Where was Ann born?", "response": ""},
        {"question": "Where was Ann born?", "response": "In Lunwick."},
    ]
    scores = fluency_nll(tiny_target.model, tiny_target.tokenizer, None, records, 8)
    assert scores[0] is None
    assert isinstance(scores[1], float) and scores[1] > 0


def test_splits_already_scored_keep_their_fluency(tiny_target, toy_bench_data, tmp_path):
    """The target's own answers, scored when it was evaluated (and cached), are not redone."""
    tiny_target.model.save_pretrained(tmp_path / "target", safe_serialization=True)
    before = evaluate_qa(tiny_target, toy_bench_data.eval_sets, 8, 8)
    before.metrics["forget/fluency_nll"] = 123.0  # as stored with a cached evaluation
    after = evaluate_qa(tiny_target, toy_bench_data.eval_sets, 8, 8)
    run = _stages(_unlearned_copy(tiny_target))

    pipeline._score_fluency(run, str(tmp_path / "target"), before, after)  # type: ignore[arg-type]

    assert before.metrics["forget/fluency_nll"] == 123.0
    assert "fluency_nll" not in before.generations["forget"][0]
    assert "retain/fluency_nll" in before.metrics
