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
