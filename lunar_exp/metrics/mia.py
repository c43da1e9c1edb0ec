"""Membership-inference attacks and PrivLeak (METRICS.md §2-3, open-unlearning's conventions).

Six attacks score each item (open-unlearning's ``src/evals/metrics/mia/``); every score is signed
like a loss: higher means "less likely a training member".

* ``loss``: mean token NLL of the text.
* ``zlib``: that loss divided by the zlib-compressed length of the text in bytes.
* ``min_k``: minus the mean of the lowest ``ceil(k * n)`` token log-probs.
* ``min_k_plus_plus``: the same on token log-probs standardised by the model's own distribution
  at each position, ``(log p(x_t) - mu_t) / sigma_t`` with ``mu_t = sum_v p_v log p_v`` and
  ``sigma_t^2 = sum_v p_v (log p_v)^2 - mu_t^2`` (clamped at 1e-6).
* ``gradnorm``: the mean over parameter tensors of the L2 norm of the gradient of the item's mean
  NLL (one backward pass per item, batch size 1).
* ``reference``: the target model's loss minus a reference (retain) model's loss.

:func:`mia_auc` labels forget items 0 and holdout items 1, so an AUC of 1 means the forget items
are far more likely under the model than the holdout items (memorised). Both min-k variants keep
``ceil(k * n)`` tokens (this project's min-k from the start; open-unlearning floors ``k * n``, so
an item whose ``k * n`` is not whole keeps one token more here).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import fmean

import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from lunar_exp.metrics.primitives import batches, next_token_logprobs, pair_batch

# Every attack, in report order; keys are ``mia/<attack>_auc`` and ``privleak/<attack>``.
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference")
# open-unlearning's TOFU_EVAL.json / MUSE_EVAL.json key of each attack's AUC (``agg_value``).
OPEN_UNLEARNING_KEYS = {attack: f"mia_{attack}" for attack in ATTACKS}
# The retain model's AUC when none is known (open-unlearning's default, with a warning).
DEFAULT_REFERENCE_AUC = 0.5
# Lower bound on the vocabulary variance in Min-K++ (open-unlearning's numerical guard).
MIN_VARIANCE = 1e-6

Pairs = Sequence[tuple[Sequence[int], Sequence[int]]]


# ----- per-item scores ----------------------------------------------------------------------------


def _lowest_count(n: int, k: float) -> int:
    return max(1, math.ceil(k * n))


def loss_score(token_logprobs: Sequence[float]) -> float:
    """LOSS attack: the mean negative log-probability of the scored tokens."""
    if not token_logprobs:
        raise ValueError("loss_score needs at least one token log-probability.")
    return -fmean(token_logprobs)


def zlib_score(loss: float, text: str) -> float:
    """ZLib attack: ``loss`` over the length in bytes of the zlib-compressed UTF-8 ``text``."""
    return loss / len(zlib.compress(text.encode("utf-8")))


def min_k_score(token_logprobs: Sequence[float], k: float = 0.4) -> float:
    """Min-k% attack: minus the mean of the lowest ``ceil(k * n)`` token log-probs."""
    if not token_logprobs:
        raise ValueError("min_k_score needs at least one token log-probability.")
    count = _lowest_count(len(token_logprobs), k)
    return -fmean(sorted(token_logprobs)[:count])


def min_k_plus_plus_score(
    token_logprobs: Sequence[float], mu: Sequence[float], variance: Sequence[float], k: float = 0.4
) -> float:
    """Min-K%++ attack: min-k of each token's log-prob standardised by its position's vocabulary.

    ``mu[t]`` and ``variance[t]`` are the mean and variance of ``log p_v`` under the model's
    next-token distribution ``p`` at token ``t`` (:class:`TokenStats`).
    """
    if not token_logprobs:
        raise ValueError("min_k_plus_plus_score needs at least one token log-probability.")
    standardised = [
        (lp - m) / math.sqrt(max(v, MIN_VARIANCE))
        for lp, m, v in zip(token_logprobs, mu, variance, strict=True)
    ]
    count = _lowest_count(len(standardised), k)
    return -fmean(sorted(standardised)[:count])


def gradnorm_score(grads: Iterable[torch.Tensor | None]) -> float:
    """GradNorm attack: the mean over parameter tensors of each gradient's L2 norm.

    Parameters without a gradient (``None``: not used by the forward pass) are left out, as
    open-unlearning does; it averages per-tensor norms rather than taking one global norm.
    """
    norms = [g.detach().float().norm(p=2) for g in grads if g is not None]
    if not norms:
        raise ValueError("gradnorm_score got no gradient. Fix: score a model with parameters.")
    return float(torch.stack(norms).mean())


def reference_score(target_loss: float, reference_loss: float) -> float:
    """Reference attack: the target model's loss minus the reference (retain) model's loss."""
    return target_loss - reference_loss


def reference_scores(target: Sequence[float], reference: Sequence[float], name: str) -> list[float]:
    """:func:`reference_score` item by item; the two lists must score the same items."""
    if len(target) != len(reference):
        raise ValueError(
            f"The retain reference holds {len(reference)} {name} losses but the run scores "
            f"{len(target)} {name} items. Fix: rebuild the retain reference with this benchmark's "
            "settings (benchmark.retain_reference=finetune)."
        )
    return [reference_score(t, r) for t, r in zip(target, reference, strict=True)]


# ----- the model passes the scores need -----------------------------------------------------------


@dataclass(frozen=True)
class TokenStats:
    """Teacher-forced statistics of one item's scored tokens (one entry per token)."""

    logprobs: list[float]  # log p(x_t)
    argmax: list[int]  # the most likely token id
    mu: list[float]  # sum_v p_v log p_v at that position
    variance: list[float]  # sum_v p_v (log p_v)^2 - mu^2


@torch.inference_mode()
def token_stats(
    model: PreTrainedModel, pairs: Pairs, pad_id: int, batch_size: int, desc: str | None = None
) -> list[TokenStats]:
    """:class:`TokenStats` of the answer tokens of each (prompt ids, answer ids) pair, one pass."""
    values: list[TokenStats] = []
    for index in batches(len(pairs), batch_size, desc, [len(p) + len(a) for p, a in pairs]):
        ids, mask, labels = (
            t.to(model.device) for t in pair_batch([pairs[i] for i in index], pad_id)
        )
        logprobs, picked, valid = next_token_logprobs(model, ids, mask, labels)
        scored = logprobs[valid]  # [scored tokens, vocab], row by row: the moments only there
        probs = scored.exp()
        mu = (probs * scored).sum(-1)
        variance = (probs * scored.square()).sum(-1) - mu.square()
        counts = valid.sum(-1).tolist()
        columns = (picked[valid], scored.argmax(-1), mu, variance)
        for lp, am, m, v in zip(*(c.split(counts) for c in columns), strict=True):
            values.append(TokenStats(lp.tolist(), am.tolist(), m.tolist(), v.tolist()))
    return values


@contextmanager
def _all_parameters_trainable(model: PreTrainedModel) -> Iterator[list[torch.nn.Parameter]]:
    """Every floating-point parameter with ``requires_grad`` on, restored on exit."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield params
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)


def gradnorm_scores(
    model: PreTrainedModel, pairs: Pairs, pad_id: int, desc: str | None = None
) -> list[float]:
    """:func:`gradnorm_score` of each pair's mean answer NLL, one forward and backward per item.

    The gradients come from ``torch.autograd.grad`` (the parameters' ``.grad`` stay untouched) with
    the model left in its current (eval) mode, so dropout, if any, stays off. Cost: one forward and
    one backward pass at batch size 1 per item, about three times a batched scoring pass.
    """
    scores: list[float] = []
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        _all_parameters_trainable(model) as params,
    ):
        for pair in tqdm(pairs, desc=desc, unit="item", leave=False) if desc else pairs:
            ids, mask, labels = (t.to(model.device) for t in pair_batch([pair], pad_id))
            _, picked, valid = next_token_logprobs(model, ids, mask, labels)
            loss = -picked[valid].mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            scores.append(gradnorm_score(grads))
    return scores


# ----- AUC and PrivLeak ---------------------------------------------------------------------------


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC AUC separating forget (label 0) from holdout (label 1) by loss-like scores."""
    labels = [0] * len(forget_scores) + [1] * len(holdout_scores)
    return float(roc_auc_score(labels, list(forget_scores) + list(holdout_scores)))


def privleak(auc: float, reference_auc: float) -> float:
    """PrivLeak in percent: ``((1 - a_u) - (1 - a_r)) / (1 - a_r + 1e-10) * 100``.

    ``auc`` is the unlearned model's :func:`mia_auc`, ``reference_auc`` the retain (retrained)
    model's; a model that behaves like the retain model scores 0, memorisation goes negative.
    """
    return ((1 - auc) - (1 - reference_auc)) / (1 - reference_auc + 1e-10) * 100


def attack_aucs(
    forget: Mapping[str, Sequence[float]], holdout: Mapping[str, Sequence[float]]
) -> dict[str, float]:
    """:func:`mia_auc` of every attack scored on both sets."""
    return {attack: mia_auc(forget[attack], holdout[attack]) for attack in forget}


def attack_metrics(
    aucs: Mapping[str, float], reference_aucs: Mapping[str, float | None]
) -> tuple[dict[str, float], list[str]]:
    """``mia/<attack>_auc`` and ``privleak/<attack>`` of each attack, and those defaulted.

    An attack without a retain-model AUC in ``reference_aucs`` (missing or None) takes
    :data:`DEFAULT_REFERENCE_AUC`; the second value lists them, for the caller's warning.
    """
    metrics: dict[str, float] = {}
    defaulted: list[str] = []
    for attack, auc in aucs.items():
        reference_auc = reference_aucs.get(attack)
        if reference_auc is None:
            defaulted.append(attack)
            reference_auc = DEFAULT_REFERENCE_AUC
        metrics[f"mia/{attack}_auc"] = auc
        metrics[f"privleak/{attack}"] = privleak(auc, reference_auc)
    return metrics, defaulted


def attack_directions(attacks: Iterable[str]) -> dict[str, bool | None]:
    """Directions of :func:`attack_metrics`' keys: best near the retain model's, so None."""
    return {key: None for attack in attacks for key in (f"mia/{attack}_auc", f"privleak/{attack}")}


def open_unlearning_aucs(record: object) -> dict[str, float]:
    """Each attack's AUC (``mia_<attack>.agg_value``) in an open-unlearning evaluation log."""
    if not isinstance(record, dict):
        return {}
    aucs = {}
    for attack, key in OPEN_UNLEARNING_KEYS.items():
        entry = record.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("agg_value"), int | float):
            aucs[attack] = float(entry["agg_value"])
    return aucs


def check_attacks(attacks: Sequence[str], key: str) -> None:
    """Reject an attack list without min-k (``privleak`` is its AUC) or with a repeat."""
    if "min_k" not in attacks:
        raise ValueError(
            f"{key}={list(attacks)} leaves out min_k, whose AUC is privleak. Fix: keep min_k in "
            f"{key} (e.g. {key}=[loss,zlib,min_k,min_k_plus_plus,reference])."
        )
    if len(set(attacks)) != len(attacks):
        raise ValueError(f"{key}={list(attacks)} names an attack twice. Fix: list each once.")
