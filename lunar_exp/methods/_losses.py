"""Unlearning losses (../shared/docs/METRICS.md §5), as pure functions of log-probabilities.

Conventions: ``seq_logp`` is the sequence-summed answer log-probability log pi(y|x) per example;
``mean_nll`` is the per-example mean answer-token NLL (l-bar). Every loss returns a scalar mean
over the batch (``wga_loss``, which takes per-token NLLs and their mask, over the batch's answer
tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ga_loss(mean_nll: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: minimise the negated forget NLL (ascend the cross-entropy)."""
    return -mean_nll.mean()


def nll_loss(mean_nll: torch.Tensor) -> torch.Tensor:
    """Plain answer cross-entropy (the retain term of GradDiff, NPO, SimNPO, IdkDPO)."""
    return mean_nll.mean()


def npo_loss(seq_logp: torch.Tensor, ref_seq_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: (2/beta) * mean log(1 + (pi/pi_ref)^beta) = -(2/beta) * mean logsigmoid(-beta*ratio)."""
    log_ratio = seq_logp - ref_seq_logp
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def simnpo_loss(mean_nll: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """SimNPO: -(2/beta) * mean logsigmoid(beta * (l-bar - delta)); no reference model."""
    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll - delta)).mean()


def idkdpo_loss(
    idk_logp: torch.Tensor,
    ref_idk_logp: torch.Tensor,
    forget_logp: torch.Tensor,
    ref_forget_logp: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO preferring the "I don't know" answer over the forget answer, with the 2/beta factor."""
    margin = (idk_logp - ref_idk_logp) - (forget_logp - ref_forget_logp)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def masked_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's masked MSE: per example, sum_t m_t * mean_d (h_t - target_t)^2 / sum_t m_t; batch mean.

    ``target`` broadcasts against ``hidden [batch, seq, d]``; ``mask [batch, seq]`` marks the tokens
    that count (answer tokens).
    """
    per_token = ((hidden - target) ** 2).mean(-1)
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def wga_loss(token_nll: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """WGA: -sum_t w_t * ce_t / sum_t m_t over every answer token of the batch.

    ``token_nll [batch, seq]`` holds ce_t = -log p_t per token and ``mask`` marks the answer
    tokens (``metrics.primitives.token_nll``). The weight w_t = p_t^beta = exp(-beta * ce_t) is
    detached, so the gradient is w_t * d(-ce_t). The mean is over tokens across the batch, not per
    example; beta = 0 gives the token-mean gradient ascent.
    """
    mask = mask.to(token_nll.dtype)
    weight = torch.exp(-beta * token_nll).detach()
    return -(weight * token_nll * mask).sum() / mask.sum().clamp(min=1)


def satimp_loss(
    token_nll: torch.Tensor, mask: torch.Tensor, beta1: float, beta2: float
) -> torch.Tensor:
    """SatImp: -sum_t w_t * ce_t / sum_t m_t with w_t = p_t^beta1 * (1 - p_t)^beta2, detached.

    Same inputs and token mean over the batch as :func:`wga_loss`; the saturation factor
    p_t^beta1 favours tokens the model already finds likely, the importance factor (1 - p_t)^beta2
    those it does not yet predict with certainty. beta1 = beta, beta2 = 0 is WGA.
    """
    mask = mask.to(token_nll.dtype)
    prob = torch.exp(-token_nll).detach()
    weight = prob**beta1 * (1 - prob) ** beta2
    return -(weight * token_nll * mask).sum() / mask.sum().clamp(min=1)


def _token_mean(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens; zero (keeping the graph) when there are none."""
    return values.mean() if values.numel() else like.sum() * 0.0


def undial_loss(
    logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, labels: torch.Tensor, beta: float
) -> torch.Tensor:
    """UNDIAL: cross-entropy to the teacher's distribution with the label's logit lowered by beta.

    One row per answer token: ``logprobs [n, vocab]`` are the student's log-softmax,
    ``teacher_logprobs [n, vocab]`` the frozen teacher's (log-softmax or logits: the target
    softmax(teacher - beta * onehot(label)) does not change under a per-row shift), ``labels [n]``
    the answer tokens. Returns -mean_n sum_v q_v log p_v; the target q carries no gradient.
    """
    adjusted = teacher_logprobs.detach().clone()
    adjusted[torch.arange(len(labels)), labels] -= beta
    target = torch.softmax(adjusted, dim=-1)
    return _token_mean(-(target * logprobs).sum(-1), logprobs)


def ceu_loss(logprobs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE-U: cross-entropy to the model's own distribution with the label's probability set to 0.

    One row per answer token (``logprobs [n, vocab]`` log-softmax, ``labels [n]``). The target
    q = softmax(logits with the label at -inf) is detached, so the gradient on the logits is
    p - q: it lowers the label's probability by p_label and spreads it over the other tokens in
    proportion to their current probabilities. Mean over the rows.
    """
    masked = logprobs.detach().clone()
    masked[torch.arange(len(labels)), labels] = float("-inf")
    target = torch.softmax(masked, dim=-1)
    return _token_mean(-(target * logprobs).sum(-1), logprobs)


def logit_margin_loss(logprobs: torch.Tensor) -> torch.Tensor:
    """PDU's logit-margin flattening loss: mean over rows of (max_v z_v - mean_v z_v)^2.

    ``logprobs [n, vocab]`` (log-softmax or logits: both max and mean move with a per-row shift,
    so their difference does not). Zero exactly when the row's distribution is uniform.
    """
    margin = logprobs.max(dim=-1).values - logprobs.mean(dim=-1)
    return _token_mean(margin**2, logprobs)


def primal_dual_loss(
    forget_loss: torch.Tensor, retain_loss: torch.Tensor, dual: float, eps: float, gamma: float
) -> torch.Tensor:
    """PDU's Lagrangian: gamma * forget + lambda * (retain - eps), lambda the dual variable."""
    return gamma * forget_loss + dual * (retain_loss - eps)


def dual_ascent(dual: float, retain_loss: float, eps: float, step: float) -> float:
    """One projected ascent step on lambda: max(0, lambda + step * (retain - eps))."""
    return max(0.0, dual + step * (retain_loss - eps))
