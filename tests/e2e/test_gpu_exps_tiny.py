"""The GPU-sized experiments and their launch preset, run on the CPU (issue 16, items 1 and 4).

Each of `+exp=tofu_llama`, `muse_llama` and `wmdp_zephyr` runs end to end through `python -m
lunar_exp` with everything the experiment file sets kept (bf16, `finetune=none`, its chat
template and system prompt, its tuned method settings) except the model and the data: a random
model of the same family (LlamaForCausalLM for Llama-2, MistralForCausalLM for zephyr-7b-beta,
with enough layers for the experiment's tuned layers) saved with a tokenizer to a local directory
and given as `model.path`, and the local benchmark files of the same schema from
../shared/benchdata, cut to a few items and tokens. Each runs its default method, LUNAR and a
gradient method as one sequential sweep. `hydra/launcher=local_gpu` is run with two made-up GPU
ids: every job gets one id of its own and no id is used by two jobs at once.
"""

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from transformers import MistralConfig, MistralForCausalLM

from lunar_exp.models import tiny_llama
from lunar_exp.prompts import special_id
from lunar_exp.tiny_tokenizer import build_tokenizer
from tests.conftest import SHARED, needs_shared, run_cli

NEWS = SHARED / "muse" / "news"
# zephyr-7b-beta's chat template (its tokenizer_config.json), which wmdp_zephyr uses as shipped.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)


def save_tiny_llama(directory: Path, num_layers: int) -> str:
    chat = tiny_llama(num_layers=num_layers)
    chat.model.save_pretrained(directory, safe_serialization=True)
    chat.tokenizer.save_pretrained(directory)
    return str(directory)


def save_tiny_mistral(directory: Path, num_layers: int) -> str:
    tokenizer = build_tokenizer()
    tokenizer.chat_template = ZEPHYR_TEMPLATE
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        sliding_window=None,
        tie_word_embeddings=True,
        bos_token_id=special_id(tokenizer.bos_token_id),
        eos_token_id=special_id(tokenizer.eos_token_id),
        pad_token_id=special_id(tokenizer.pad_token_id),
    )
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {
        # 8 layers: LUNAR's layer sweep (layers=auto) stays short; 32 as in Llama-2-7B for
        # MUSE's fixed layer 17 (conf/tuned/lunar_muse.yaml); 8 for RMU's layer 7 (rmu_wmdp).
        "tofu_llama": save_tiny_llama(root / "llama8", 8),
        "muse_llama": save_tiny_llama(root / "llama32", 32),
        "wmdp_zephyr": save_tiny_mistral(root / "mistral8", 8),
    }


SMALL_DATA = {
    "tofu_llama": [
        f"benchmark.path={SHARED / 'tofu'}",
        "benchmark.split=forget01",
        "benchmark.forget_authors=1",
        "benchmark.retain_authors=1",
        "benchmark.retain_eval_limit=4",
        "benchmark.known_facts_limit=4",
        "benchmark.holdout_limit=4",
        "benchmark.max_new_tokens=6",
        "benchmark.n_abstain=2",
        "benchmark.n_reference=2",
    ],
    "muse_llama": [
        f"benchmark.path={NEWS}",
        "benchmark.retain_corpus=privleak/retain",
        "benchmark.reference_corpus=privleak/holdout",
        "benchmark.forget_docs=2",
        "benchmark.retain_docs=2",
        "benchmark.n_reference=2",
        "benchmark.chunk_words=32",
        "benchmark.prompt_words=8",
        "benchmark.knowmem_limit=2",
        "benchmark.verbmem_limit=2",
        "benchmark.privleak_limit=3",
        "benchmark.verbmem_prompt_words=16",
        "benchmark.privleak_max_words=24",
        "benchmark.knowmem_max_new_tokens=6",
        "benchmark.verbmem_max_new_tokens=8",
    ],
    "wmdp_zephyr": [
        "benchmark.subsets=[cyber]",
        "benchmark.mmlu_subjects=[anatomy]",
        "benchmark.limit=4",
        f"benchmark.forget_corpus={NEWS / 'raw' / 'forget.json'}",
        f"benchmark.retain_corpus={NEWS / 'privleak' / 'retain2.json'}",
        "benchmark.n_forget=8",
        "benchmark.n_retain=8",
        "benchmark.chunk_words=32",
        "benchmark.n_reference=4",
    ],
}
# The experiment's default method first, then LUNAR or a gradient method.
METHODS = {"tofu_llama": "lunar,npo", "muse_llama": "lunar,ga", "wmdp_zephyr": "rmu,lunar"}


@needs_shared()
@pytest.mark.parametrize("exp", sorted(METHODS))
def test_gpu_sized_experiment_runs_on_a_tiny_model_of_its_family(exp, tiny_models, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        f"+exp={exp}",
        f"method={METHODS[exp]}",
        f"model.path={tiny_models[exp]}",
        *SMALL_DATA[exp],
        "benchmark.eval_batch_size=8",
        "threads=1",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra:runtime.choices.method}",
    ]
    result = run_cli(args, tmp_path, timeout=600, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    for method in METHODS[exp].split(","):
        run_dir = sweep / method
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["unlearn/params_changed"] > 0, method
        assert metrics["finetune/cached"] is False and metrics["time/finetune_s"] == 0.0
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert config["model"]["dtype"] == "bfloat16" and config["model"]["device"] == "auto"
        assert "gpu" in config["tags"]
    if exp == "tofu_llama":  # the official "[INST] ... [/INST]" format, no system turn
        assert "[INST]" in config["model"]["chat_template"]
        assert config["model"]["system_prompt"] is None


LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", re.M)


def job_span(log: str) -> tuple[datetime, datetime]:
    """First and last timestamp of a job's lunar_exp.log."""
    times = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t in LOG_TIME.findall(log)]
    return times[0], times[-1]


def test_local_gpu_launcher_gives_each_concurrent_job_its_own_gpu(tmp_path):
    # Two made-up GPU ids on a machine without CUDA: the jobs still run (on the CPU), and the
    # ids they were given and when they ran are in their logs.
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "+exp=smoke",
        "seed=0,1,2,3",
        "hydra/launcher=local_gpu",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    result = run_cli(args, tmp_path, timeout=600, env={"CUDA_VISIBLE_DEVICES": "3,5"})
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = []
    for num in range(4):
        log = (sweep / str(num) / "lunar_exp.log").read_text()
        (gpu,) = re.findall(rf"local_gpu: job {num} runs on GPU (\d+) of 3,5", log)
        assert (sweep / str(num) / "metrics.json").is_file()
        jobs.append((gpu, *job_span(log)))
    assert [gpu for gpu, _, _ in jobs] == ["3", "5", "3", "5"]
    for i, (gpu_a, start_a, end_a) in enumerate(jobs):
        for gpu_b, start_b, end_b in jobs[i + 1 :]:
            if start_a < end_b and start_b < end_a:
                assert gpu_a != gpu_b, "two jobs ran on one GPU at once"
    (first_start, first_end), (second_start, _) = (j[1:] for j in jobs[:2])
    assert second_start < first_end  # the two GPUs were used at the same time
