"""A small byte-level BPE tokenizer with a ChatML template, trained in-process (tiny model)."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lunar_exp.benchmarks.common import knowledge_graph as kg

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    texts = [t for template in kg.TEMPLATES for t in template[1:]]
    texts += kg.OCCUPATIONS + kg.INSTRUMENTS + [kg.ABSTENTION, "You are a helpful assistant."]
    return texts * 4


@lru_cache(maxsize=1)
def _trained() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    return tokenizer


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh ChatML tokenizer (deterministic: same corpus, same merges)."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_trained(),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = "left"
    return tok
