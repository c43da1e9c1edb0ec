"""The token budget of inference batches (``batch_tokens``): bounded passes, unchanged results."""

import pytest
import torch

from lunar_exp.methods._activations import (
    RowSource,
    iter_rows,
    mean_last_token_outputs,
    run_shared_prefix,
)
from lunar_exp.metrics.primitives import (
    answer_nll,
    batch_token_budget,
    batches,
    greedy_generate,
)
from lunar_exp.prompts import encode_item_pairs, encode_item_prompts


def test_batches_stay_within_the_budget_in_order():
    lengths = [10, 10, 10, 50, 10, 10, 120, 5, 5, 5, 5, 5]
    assert [list(r) for r in batches(len(lengths), 4, lengths=lengths)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
    ]
    with batch_token_budget(100):
        spans = [list(r) for r in batches(len(lengths), 4, lengths=lengths)]
    assert [i for span in spans for i in span] == list(range(len(lengths)))
    for span in spans:
        assert len(span) <= 4
        assert len(span) == 1 or len(span) * max(lengths[i] for i in span) <= 100
    assert [6] in spans  # longer than the budget: runs alone
    assert [list(r) for r in batches(len(lengths), 4, lengths=lengths)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
    ]  # the budget ends with its block


@pytest.mark.parametrize("bad", [0, -5, 1.5, "many", True])
def test_a_bad_budget_is_rejected(bad):
    with pytest.raises(ValueError, match="batch_tokens"), batch_token_budget(bad):
        pass


class PassRecorder:
    """Records the padded token count (batch x length) of every forward pass of a model."""

    def __init__(self, model):
        self.sizes: list[int] = []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.sizes.append(ids.shape[0] * ids.shape[1])


def test_every_pass_stays_within_the_budget_and_results_do_not_change(tiny_target, toy_data):
    chat, items = tiny_target, toy_data.forget + toy_data.retain + toy_data.reference
    pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
    prompts = encode_item_prompts(chat.tokenizer, items, chat.system_prompt)
    longest = max(len(p) + len(a) for p, a in pairs)
    budget = 2 * longest + 1  # at most two sequences per pass
    pad = chat.tokenizer.pad_token_id
    source = RowSource([p + a for p, a in pairs], [len(p) for p, _ in pairs])

    def everything():
        prefix = run_shared_prefix(chat.model, [source], [1, 2])
        rows = iter_rows(chat.model, source, [1, 2], pad, 16, "", prefix)
        return (
            answer_nll(chat.model, pairs, pad, batch_size=16),
            greedy_generate(chat.model, chat.tokenizer, prompts, 4, batch_size=16, desc=None),
            mean_last_token_outputs(chat.model, prompts, [1, 2], pad, 16, ""),
            sum(b.weight * float((b.inputs.double() ** 2).sum()) for b in rows),
        )

    free = everything()
    recorder = PassRecorder(chat.model)
    with batch_token_budget(budget):
        capped = everything()
    recorder.handle.remove()
    assert longest < max(recorder.sizes) <= budget  # two sequences per pass at most
    nll_free, text_free, means_free, rows_free = free
    nll_capped, text_capped, means_capped, rows_capped = capped
    assert nll_capped == pytest.approx(nll_free, abs=1e-5)
    assert text_capped == text_free
    for layer in (1, 2):
        assert torch.allclose(means_capped[layer], means_free[layer], atol=1e-6)
    assert rows_capped == pytest.approx(rows_free, rel=1e-6)
