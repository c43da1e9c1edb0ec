import torch

from lunar_exp.interfaces import QA
from lunar_exp.metrics.primitives import (
    _target_ranks,
    answer_nll,
    greedy_generate,
    greedy_generate_ranked,
    pad_left,
)
from lunar_exp.prompts import (
    encode_item_pairs,
    encode_item_prompts,
    encode_pairs,
    encode_prompts,
    shared_prefix_length,
)


def test_pad_left():
    ids, mask = pad_left([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_answer_nll_batched_equals_a_direct_loop(tiny_chat, toy_data):
    tok, model = tiny_chat.tokenizer, tiny_chat.model
    items = toy_data.forget + toy_data.retain
    pairs = encode_pairs(
        tok, [q.question for q in items], [q.answer for q in items], tiny_chat.system_prompt
    )
    batched = answer_nll(model, pairs, tok.pad_token_id, batch_size=4)
    for (prompt, answer), value in zip(pairs, batched, strict=True):
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1]
        direct = torch.nn.functional.cross_entropy(logits, torch.tensor(answer)).item()
        assert abs(direct - value) < 1e-4


def test_greedy_generation_does_not_depend_on_batching(tiny_chat, toy_data):
    tok, model = tiny_chat.tokenizer, tiny_chat.model
    prompts = encode_prompts(tok, [q.question for q in toy_data.retain], tiny_chat.system_prompt)
    together = greedy_generate(model, tok, prompts, max_new_tokens=6, batch_size=8)
    alone = [greedy_generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert together == alone


def test_shared_prefix_is_the_template_head(tiny_chat):
    prompts = encode_prompts(
        tiny_chat.tokenizer, ["Where is A?", "Who is B?"], tiny_chat.system_prompt
    )
    n = shared_prefix_length(prompts)
    head = tiny_chat.tokenizer.decode(prompts[0][:n])
    assert head.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert prompts[0][n] != prompts[1][n]


def test_plain_items_skip_the_chat_template_and_mix_with_chat_items(tiny_chat):
    tok = tiny_chat.tokenizer
    chat_item = QA("Where is A?", "Paris", "e")
    plain_item = QA("The cat sat", " on the mat", "doc", plain=True)
    empty_item = QA("", "A whole document.", "doc", plain=True)
    pairs = encode_item_pairs(tok, [chat_item, plain_item, empty_item], tiny_chat.system_prompt)
    assert pairs[0] == encode_pairs(tok, ["Where is A?"], ["Paris"], tiny_chat.system_prompt)[0]
    assert tok.decode(pairs[1][0]) == tok.decode(tok("The cat sat")["input_ids"])
    assert "<|im_start|>system" not in tok.decode(pairs[1][0])
    assert pairs[1][1] == tok(" on the mat", add_special_tokens=False)["input_ids"]
    assert len(pairs[2][0]) == 1  # an empty prefix still gives the model one token to start from
    prompts = encode_item_prompts(tok, [plain_item, chat_item], tiny_chat.system_prompt)
    assert prompts[1] == pairs[0][0] and prompts[0] == pairs[1][0]


def test_target_ranks_count_strictly_higher_logits_per_step():
    # two steps, vocabulary 4, two rows
    steps = [
        torch.tensor([[0.1, 0.9, 0.5, 0.0], [3.0, 2.0, 1.0, 0.0]]),
        torch.tensor([[0.2, 0.2, 0.7, 0.1], [0.0, 0.0, 0.0, 5.0]]),
    ]
    # row 0 wants tokens 2 then 0: step 0 logit 0.5 has one higher (0.9) -> rank 2;
    # step 1 logit 0.2 ties token 1 and is below 0.7 -> rank 2 (ties count for the target).
    # row 1 wants 3 tokens: 0 (rank 1), 3 (rank 1), then a step that was never generated: 4.
    assert _target_ranks(steps, [[2, 0], [0, 3, 1]]) == [[2, 2], [1, 1, 4]]


def test_a_models_own_greedy_answer_ranks_first_at_every_step(tiny_chat, toy_data):
    tok, model = tiny_chat.tokenizer, tiny_chat.model
    prompts = encode_item_prompts(tok, toy_data.forget + toy_data.retain, tiny_chat.system_prompt)
    texts = greedy_generate(model, tok, prompts, 6, batch_size=3, desc=None)
    again = [
        model.generate(
            input_ids=torch.tensor([p]), max_new_tokens=6, do_sample=False, pad_token_id=0
        )[0, len(p) :].tolist()
        for p in prompts
    ]
    wrong = [[(t + 1) % len(tok) for t in ids] for ids in again]
    same, ranks = greedy_generate_ranked(model, tok, prompts, again, 6, batch_size=3, desc=None)
    _, other = greedy_generate_ranked(model, tok, prompts, wrong, 6, batch_size=3, desc=None)
    assert same == texts
    assert all(r == 1 for item in ranks for r in item)
    assert any(r > 1 for item in other for r in item)
