import torch

from lunar_exp.metrics.primitives import answer_nll, greedy_generate, pad_left
from lunar_exp.prompts import encode_pairs, encode_prompts, shared_prefix_length


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
