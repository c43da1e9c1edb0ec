import math
from types import SimpleNamespace
from typing import cast

import pytest
import torch
from transformers import PreTrainedModel

from lunar_exp.interfaces import QA
from lunar_exp.metrics.mia import (
    ATTACKS,
    attack_aucs,
    attack_metrics,
    check_attacks,
    gradnorm_score,
    gradnorm_scores,
    loss_score,
    mia_auc,
    min_k_plus_plus_score,
    min_k_score,
    open_unlearning_aucs,
    privleak,
    reference_score,
    reference_scores,
    token_stats,
    zlib_score,
)
from lunar_exp.metrics.primitives import answer_nll, answer_token_logprobs
from lunar_exp.prompts import encode_item_pairs


def test_min_k_takes_the_lowest_ceil_k_fraction():
    # n = 5, k = 0.4 -> ceil(2.0) = 2 lowest: -3 and -2 -> score = -mean(-3, -2) = 2.5
    assert min_k_score([-1.0, -2.0, -0.5, -3.0, -0.1], k=0.4) == pytest.approx(2.5)
    # n = 3, k = 0.4 -> ceil(1.2) = 2 lowest: -4, -1 -> 2.5
    assert min_k_score([-1.0, -4.0, -0.2], k=0.4) == pytest.approx(2.5)
    assert min_k_score([-0.7], k=0.4) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        min_k_score([])


def test_mia_auc_is_one_when_forget_items_look_like_members():
    # forget scores (losses) all below holdout scores -> perfectly separated, AUC = 1.
    assert mia_auc([0.1, 0.2], [0.5, 0.9, 1.0]) == 1.0
    assert mia_auc([0.5, 0.9], [0.1, 0.2]) == 0.0
    # pairs (f, h): (0.1,0.2)+ (0.1,0.3)+ (0.4,0.2)- (0.4,0.3)- -> 2/4
    assert mia_auc([0.1, 0.4], [0.2, 0.3]) == 0.5


def test_privleak_formula():
    # ((1 - 0.9) - (1 - 0.5)) / (1 - 0.5) * 100 = (0.1 - 0.5) / 0.5 * 100 = -80
    assert privleak(0.9, 0.5) == pytest.approx(-80.0)
    assert privleak(0.5, 0.5) == pytest.approx(0.0)
    # retain-model AUC 0.4: ((1-0.3) - 0.6) / 0.6 * 100 = 16.67
    assert privleak(0.3, 0.4) == pytest.approx(100 / 6)


def test_token_logprobs_agree_with_answer_nll(tiny_chat):
    tok = tiny_chat.tokenizer
    items = [QA("Where is A?", "In Paris.", "e"), QA("The cat", " sat on the mat", "d", plain=True)]
    pairs = encode_item_pairs(tok, items, tiny_chat.system_prompt)
    per_token = answer_token_logprobs(tiny_chat.model, pairs, tok.pad_token_id, batch_size=2)
    means = answer_nll(tiny_chat.model, pairs, tok.pad_token_id)
    for values, (_, answer), mean in zip(per_token, pairs, means, strict=True):
        assert len(values) == len(answer)
        assert -sum(values) / len(values) == pytest.approx(mean, abs=1e-5)
        assert max(values) <= 0.0
    assert isinstance(torch.tensor(per_token[0]), torch.Tensor)
    # the attacks' one-pass statistics, batched with left padding, keep each item's own tokens
    stats = token_stats(tiny_chat.model, pairs, tok.pad_token_id, batch_size=2)
    for values, item_stats in zip(per_token, stats, strict=True):
        assert item_stats.logprobs == pytest.approx(values, abs=1e-5)
        assert len(item_stats.mu) == len(item_stats.variance) == len(values)
        assert all(v >= -1e-6 for v in item_stats.variance)


# ----- the other attacks' per-item scores, by hand ------------------------------------------------

# Token log-probs of one item, used below: sum = -6.6, n = 5.
LOGPROBS = [-1.0, -2.0, -0.5, -3.0, -0.1]


def test_loss_is_the_mean_token_nll():
    # -(-1 - 2 - 0.5 - 3 - 0.1) / 5 = 6.6 / 5 = 1.32
    assert loss_score(LOGPROBS) == pytest.approx(1.32)
    with pytest.raises(ValueError):
        loss_score([])


def test_zlib_divides_the_mean_nll_by_the_compressed_length_in_bytes():
    # zlib stream of "abc": 2-byte header + deflate (3-bit block header, 3 literals x 8 bits,
    # 7-bit end of block = 34 bits -> 5 bytes) + 4-byte Adler-32 = 11 bytes; 1.32 / 11 = 0.12
    assert zlib_score(1.32, "abc") == pytest.approx(0.12)
    # the empty text: 2 + 2 (an empty fixed block, 10 bits) + 4 = 8 bytes; 1.32 / 8 = 0.165
    assert zlib_score(1.32, "") == pytest.approx(0.165)


def test_min_k_plus_plus_standardises_by_the_vocabulary_distribution():
    # z_t = (lp - mu) / sqrt(var): (-1 + 0.5) / sqrt(0.25) = -1; (-2 + 1) / sqrt(4) = -0.5;
    # (-0.5 + 0.5) / sqrt(1) = 0. n = 3, k = 0.4 -> ceil(1.2) = 2 lowest: -1, -0.5 -> 0.75
    score = min_k_plus_plus_score([-1.0, -2.0, -0.5], [-0.5, -1.0, -0.5], [0.25, 4.0, 1.0], k=0.4)
    assert score == pytest.approx(0.75)
    # k = 1: all three -> -(-1 - 0.5 + 0) / 3 = 0.5
    assert min_k_plus_plus_score(
        [-1.0, -2.0, -0.5], [-0.5, -1.0, -0.5], [0.25, 4.0, 1.0], k=1.0
    ) == pytest.approx(0.5)
    # a zero variance is clamped at 1e-6: (-0.6 + 0.5) / sqrt(1e-6) = -0.1 / 0.001 = -100
    assert min_k_plus_plus_score([-0.6], [-0.5], [0.0]) == pytest.approx(100.0)


def test_reference_is_the_target_loss_minus_the_reference_loss():
    # 2.0 - 0.5 = 1.5: the target model finds the item less likely than the reference does
    assert reference_score(2.0, 0.5) == pytest.approx(1.5)
    assert reference_scores([2.0, 1.0], [0.5, 1.5], "forget") == pytest.approx([1.5, -0.5])
    with pytest.raises(ValueError, match="holds 1 forget losses but the run scores 2"):
        reference_scores([2.0, 1.0], [0.5], "forget")


class ToyLM(torch.nn.Module):
    """Vocabulary {0, 1}; at every position logit_0 = w[0] + w[1] and logit_1 = v.

    ``unused`` takes no part in the forward pass (its gradient is None).
    """

    def __init__(self, w: tuple[float, float], v: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.v = torch.nn.Parameter(torch.tensor(v))
        self.unused = torch.nn.Parameter(torch.tensor([7.0, 7.0, 7.0]))

    @property
    def device(self) -> torch.device:
        return self.w.device

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        logits = torch.stack([self.w.sum(), self.v]).expand(*input_ids.shape, 2)
        return SimpleNamespace(logits=logits)


def as_lm(model: ToyLM) -> PreTrainedModel:
    """The toy model typed as the scorers' argument (they use only forward and .device)."""
    return cast(PreTrainedModel, model)


def test_gradnorm_is_the_mean_of_per_tensor_gradient_norms():
    # prompt [0], answer [1]: one scored token, target 1, loss = logsumexp(l0, l1) - l1.
    # w = (0, 0), v = 0 -> p = (0.5, 0.5); dL/dl0 = p0 = 0.5, dL/dl1 = p1 - 1 = -0.5.
    # grad w = (0.5, 0.5), |.|_2 = sqrt(0.5) = 0.70711; grad v = -0.5, |.|_2 = 0.5.
    # mean of the two tensors' norms = (0.70711 + 0.5) / 2 = 0.60355 (the global norm would be
    # sqrt(0.75) = 0.866; counting the unused tensor as 0 would give 0.40237).
    model = ToyLM((0.0, 0.0), 0.0)
    model.v.requires_grad_(False)  # frozen parameters still count, and stay frozen
    (score,) = gradnorm_scores(as_lm(model), [([0], [1])], pad_id=0)
    assert score == pytest.approx((math.sqrt(0.5) + 0.5) / 2)
    assert not model.v.requires_grad and model.w.requires_grad
    assert model.w.grad is None  # the parameters' .grad are left alone
    # w = (ln 3, 0), v = 0 -> p = (0.75, 0.25); grad w = (0.75, 0.75) -> 0.75 * sqrt(2) = 1.06066,
    # grad v = 0.25 - 1 = -0.75 -> 0.75; mean = (1.06066 + 0.75) / 2 = 0.90533
    (score,) = gradnorm_scores(as_lm(ToyLM((math.log(3), 0.0), 0.0)), [([0], [1])], pad_id=0)
    assert score == pytest.approx((0.75 * math.sqrt(2) + 0.75) / 2)
    assert gradnorm_score([None, torch.tensor([3.0, 4.0]), torch.tensor([-1.0])]) == 3.0


def test_token_stats_give_the_vocabulary_mean_and_variance_of_log_p():
    # p = (0.75, 0.25) at every position (w = (ln 3, 0), v = 0); answer [1, 0]:
    # log p = (ln 0.75, ln 0.25) = (-0.28768, -1.38629)
    # mu = 0.75 * -0.28768 + 0.25 * -1.38629 = -0.56233
    # var = 0.75 * 0.08276 + 0.25 * 1.92181 - mu^2 = 0.54252 - 0.31622 = 0.22630
    toy = as_lm(ToyLM((math.log(3), 0.0), 0.0))
    (stats,) = token_stats(toy, [([0], [1, 0])], 0, batch_size=1)
    mu = 0.75 * math.log(0.75) + 0.25 * math.log(0.25)
    var = 0.75 * math.log(0.75) ** 2 + 0.25 * math.log(0.25) ** 2 - mu**2
    assert stats.logprobs == pytest.approx([math.log(0.25), math.log(0.75)])
    assert stats.argmax == [0, 0]
    assert stats.mu == pytest.approx([mu, mu]) and mu == pytest.approx(-0.56233, abs=1e-5)
    assert stats.variance == pytest.approx([var, var]) and var == pytest.approx(0.2263, abs=1e-4)


def test_attack_metrics_default_a_missing_retain_auc_to_one_half_and_say_which():
    # loss: ((1 - 0.9) - (1 - 0.5)) / 0.5 * 100 = -80; zlib has no retain AUC -> 0.5:
    # ((1 - 0.3) - 0.5) / 0.5 * 100 = 40; min_k against 0.4: ((1 - 0.4) - 0.6) / 0.6 = 0
    metrics, defaulted = attack_metrics(
        {"loss": 0.9, "zlib": 0.3, "min_k": 0.4}, {"loss": 0.5, "min_k": 0.4, "zlib": None}
    )
    assert metrics["mia/loss_auc"] == 0.9 and metrics["mia/zlib_auc"] == 0.3
    assert metrics["privleak/loss"] == pytest.approx(-80.0)
    assert metrics["privleak/zlib"] == pytest.approx(40.0)
    assert metrics["privleak/min_k"] == pytest.approx(0.0, abs=1e-6)
    assert defaulted == ["zlib"]
    assert attack_aucs({"loss": [0.1, 0.2]}, {"loss": [0.5, 0.9]}) == {"loss": 1.0}


def test_open_unlearning_logs_give_each_attack_auc():
    log = {
        "mia_loss": {"agg_value": 0.7, "forget": {}, "holdout": {}},
        "mia_min_k_plus_plus": {"agg_value": 0.6},
        "mia_gradnorm": {"agg_value": None},
        "privleak": {"agg_value": 3.0},
    }
    assert open_unlearning_aucs(log) == {"loss": 0.7, "min_k_plus_plus": 0.6}


def test_an_attack_list_without_min_k_or_with_a_repeat_is_refused():
    with pytest.raises(ValueError, match=r"leaves out min_k, whose AUC is privleak\. Fix:"):
        check_attacks(["loss", "zlib"], "benchmark.mia_attacks")
    with pytest.raises(ValueError, match="names an attack twice"):
        check_attacks(["min_k", "loss", "loss"], "benchmark.mia_attacks")
    check_attacks(list(ATTACKS), "benchmark.mia_attacks")
