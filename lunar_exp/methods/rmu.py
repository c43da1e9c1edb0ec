"""RMU: Representation Misdirection for Unlearning (Li et al. 2024, WMDP, arXiv 2403.03218).

Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/rmu.py``.
The hidden state leaving block ``layer`` is pushed toward a fixed random direction u = c*r/|r|
(r ~ U[0,1)^d, drawn once from ``seed``) on forget answer tokens, and held to a frozen copy's
hidden state on retain answer tokens. Only parameters matching ``trainable_params`` train.
"""

from __future__ import annotations

import copy

import torch

from lunar_exp.bookkeeping.errors import require_index, require_numbers, require_ranges
from lunar_exp.hooks import capture_block_outputs, check_layers
from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._activations import forward_until
from lunar_exp.methods._loop import _pad, encode_items, loop_settings, run_unlearning
from lunar_exp.methods._losses import masked_mse
from lunar_exp.metrics.primitives import pair_batch


class RMU:
    r"""L = gamma * MSE(h_forget, u) + alpha * MSE(h_retain, h_retain_frozen) at one layer.

    Args:
        layer: decoder block whose output is steered.
        steering_coeff: c, the norm of the target direction u.
        trainable_params: regex over parameter names to train (None = all). The WMDP recipe
            trains ``model\\.layers\\.(5|6|7)\\.mlp\\.down_proj\\.weight``.
        gamma: forget-term weight.
        alpha: retain-term weight.
        lr: AdamW learning rate.
        epochs: passes over the forget set.
        batch_size: forget (and paired retain) items per micro-batch.
        grad_accum: micro-batches per optimizer step.
        weight_decay: AdamW weight decay.
        gradient_checkpointing: trade compute for memory.
        bf16: autocast to bfloat16 on GPU.
        seed: direction, batch order and retain sampling seed.
    """

    def __init__(
        self,
        layer: int = 7,
        steering_coeff: float = 2.0,
        trainable_params: str | None = None,
        gamma: float = 1.0,
        alpha: float = 1.0,
        lr: float = 1e-5,
        epochs: int = 5,
        batch_size: int = 8,
        grad_accum: int = 1,
        weight_decay: float = 0.01,
        gradient_checkpointing: bool = False,
        bf16: bool = False,
        seed: int = 0,
    ) -> None:
        require_index("method", "layer", layer)
        require_numbers("method", steering_coeff=steering_coeff)
        require_ranges("method", non_negative={"gamma": gamma, "alpha": alpha})
        self.layer, self.steering_coeff = layer, steering_coeff
        self.gamma, self.alpha, self.seed = gamma, alpha, seed
        self.loop = loop_settings(
            lr, epochs, batch_size, grad_accum, weight_decay, seed, gradient_checkpointing, bf16
        )
        self.trainable_params = trainable_params

    def check(self, chat: ChatModel) -> None:
        """Fail before fine-tuning when the layer does not exist."""
        check_layers(chat.model, [self.layer], need_next=False)

    def target_direction(self, hidden_size: int) -> torch.Tensor:
        """The target direction u = c * r / |r|, with r ~ U[0, 1)^d drawn from ``seed``."""
        r = torch.rand(hidden_size, generator=torch.Generator().manual_seed(self.seed))
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
                forward_until(model, ids, mask, self.layer)  # the loss reads only this block
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
            outcome.metrics, {"rmu.u": u.cpu()}, {**outcome.info, "layer": self.layer}
        )
