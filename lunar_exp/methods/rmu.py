"""RMU: Representation Misdirection for Unlearning (Li et al. 2024, WMDP, arXiv 2403.03218).

Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/rmu.py``.
The hidden state leaving block ``layer`` is pushed toward a fixed random direction u = c*r/|r|
(r ~ U[0,1)^d, drawn once from ``loop.seed``) on forget answer tokens, and held to a frozen copy's
hidden state on retain answer tokens. Only parameters matching ``trainable_params`` train.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from lunar_exp.hooks import capture_block_outputs, check_layers
from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import TrainLoop, _pad, encode_items, forward_blocks, run_unlearning
from lunar_exp.methods._losses import masked_mse
from lunar_exp.metrics.primitives import pair_batch
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class RMU:
    r"""L = gamma * MSE(h_forget, u) + alpha * MSE(h_retain, h_retain_frozen) at one layer."""

    layer: int = setting(7, help="decoder block whose output is steered.")
    steering_coeff: float = setting(2.0, help="c, the norm of the target direction u.")
    trainable_params: str | None = setting(
        None,
        help="regex over parameter names to train (None = all); the WMDP recipe trains "
        r"model\.layers\.(5|6|7)\.mlp\.down_proj\.weight.",
    )
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(1.0, ge=0, help="retain-term weight.")
    loop: TrainLoop = setting(
        factory=TrainLoop, help="the training loop (method.loop.*); its seed also draws u."
    )

    def __post_init__(self) -> None:
        validate(self, "method")

    def check(self, chat: ChatModel) -> None:
        """Fail before fine-tuning when the layer does not exist."""
        check_layers(chat.model, [self.layer], need_next=False)

    def target_direction(self, hidden_size: int) -> torch.Tensor:
        """The target direction u = c * r / |r|, with r ~ U[0, 1)^d drawn from ``loop.seed``."""
        r = torch.rand(hidden_size, generator=torch.Generator().manual_seed(self.loop.seed))
        return self.steering_coeff * r / r.norm()

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Misdirect forget activations at ``layer``; anchor retain activations to a frozen copy."""
        self.check(chat)
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)
        frozen = copy.deepcopy(chat.model).eval().requires_grad_(False)
        u = self.target_direction(chat.model.config.hidden_size).to(chat.model.device)

        def hidden_and_mask(model, pairs, detach):
            ids, mask, labels = (t.to(model.device) for t in pair_batch(pairs, _pad(chat)))
            with capture_block_outputs(model, [self.layer], detach=detach) as store:
                forward_blocks(model, ids, mask, self.layer)  # the loss reads only this block
            return store[self.layer], labels != -100

        def batch_loss(forget_idx, retain_idx):
            h_f, m_f = hidden_and_mask(chat.model, [forget[i] for i in forget_idx], False)
            r_pairs = [retain[i] for i in retain_idx]
            h_r, m_r = hidden_and_mask(chat.model, r_pairs, False)
            with torch.no_grad():
                h_ref, _ = hidden_and_mask(frozen, r_pairs, True)
            f_loss = masked_mse(h_f, u.to(h_f.dtype), m_f)
            r_loss = masked_mse(h_r, h_ref.to(h_r.dtype), m_r)
            loss = self.gamma * f_loss + self.alpha * r_loss
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
            }

        outcome = run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "rmu"
        )
        return UnlearnOutcome(
            outcome.metrics,
            {"rmu.u": u.cpu()},
            {**outcome.info, "layer": self.layer},
            edited_layers=(self.layer,),
        )
