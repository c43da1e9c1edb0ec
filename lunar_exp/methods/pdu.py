"""PDU: primal-dual constrained unlearning (Entesari et al. 2025, arXiv 2506.05314).

"Constrained Entropic Unlearning: A Primal-Dual Framework for Large Language Models". Reference
implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/pdu.py`` and
``community/methods/PDU/run.sh``. Minimise the logit-margin flattening loss on the forget answers
subject to retain NLL <= eps: each micro-batch minimises the Lagrangian
gamma * forget + lambda * (retain - eps) and then, once ``dual_warmup_epochs`` passes over the
forget set are done, takes a projected ascent step lambda <- max(0, lambda + step * (retain - eps))
(the reference's ``dual_update_upon: step``; its per-epoch update is not offered).

The flattening loss is taken at the positions that predict the answer tokens, as every loss here;
the reference takes it at the answer tokens' own positions (one position later).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import (
    TrainLoop,
    answer_logprobs,
    answer_token_logprobs,
    encode_items,
    loop_setting,
    run_unlearning,
    trainable_params_setting,
)
from lunar_exp.methods._losses import dual_ascent, logit_margin_loss, nll_loss, primal_dual_loss
from lunar_exp.metrics.primitives import padding_id
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class PDU:
    """L = gamma * margin(forget) + lambda * (NLL retain - eps), lambda by dual ascent."""

    retain_loss_eps: float = setting(
        0.3, ge=0, help="retain NLL bound eps of the constraint (pick above the target's NLL)."
    )
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(100.0, ge=0, help="initial dual variable lambda (the retain weight).")
    primal_dual: bool = setting(True, help="update lambda by dual ascent (False: fixed alpha).")
    dual_step_size: float = setting(5.0, ge=0, help="dual ascent step size.")
    dual_warmup_epochs: int = setting(
        5, ge=0, help="passes over the forget set before lambda starts to move."
    )
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Flatten the forget answers' next-token distributions while retain NLL stays <= eps."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)
        pad = padding_id(chat.tokenizer)
        state = {"dual": self.alpha, "calls": 0}
        calls_per_epoch = math.ceil(len(forget) / self.loop.batch_size)

        def batch_loss(forget_idx, retain_idx):
            model = chat.model  # read when called: the loop may train a sharded copy
            rows, _ = answer_token_logprobs(model, [forget[i] for i in forget_idx], pad)
            _, r_nll = answer_logprobs(model, [retain[i] for i in retain_idx], pad)
            f_loss, r_loss = logit_margin_loss(rows), nll_loss(r_nll)
            dual = state["dual"]
            loss = primal_dual_loss(f_loss, r_loss, dual, self.retain_loss_eps, self.gamma)
            if self.primal_dual and state["calls"] // calls_per_epoch >= self.dual_warmup_epochs:
                step = self.dual_step_size
                state["dual"] = dual_ascent(dual, r_loss.item(), self.retain_loss_eps, step)
            state["calls"] += 1  # one call per global batch, on every rank
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
                "dual": dual,
            }

        return run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "pdu"
        )
