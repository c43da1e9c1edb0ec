"""The memory model: bytes per GPU of each stage, split into the five parts a user can change.

Training (the fine-tuning stage and every gradient method) follows ``lunar_exp/training.py``,
``methods/_loop.py`` and ``distributed.py``: one process trains fp32 master weights in place (a
bf16 model is upcast; on CUDA it computes under bf16 autocast), several ranks train an FSDP2 copy
(fp32 shards over the ranks, bf16 compute on CUDA, each rank on ``ceil(batch / world)`` items)
while the original model waits in host memory (on CUDA; on CPU it stays). AdamW keeps two fp32
states per trained parameter, created for the parameters the loss reaches. Activation bytes per
token come from the tensors autograd saves in a Hugging Face Llama block (counted with
``saved_tensors_hooks`` on transformers 5.25, sdpa attention, a padded batch of length T):
``c * (10 d + 4 f) + 4 heads + 8 + 4 T`` for compute dtype size ``c`` (fp32: c = 4, bf16: c = 2),
the block input alone with gradient checkpointing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from omegaconf import DictConfig

from lunar_exp.plan.arch import Arch
from lunar_exp.plan.lengths import Lengths

GIB = 2**30
# Gradient checkpointing default of the training loops (lunar_exp/training.py).
CHECKPOINTING_MIN_PARAMS = 1_000_000_000
# Methods and the forward passes each micro-batch keeps for one backward: (sets, reference).
# sets name the token-length sets (forget, retain, reference-length answers); reference is what
# the method holds besides the model ("logprobs": precomputed reference log-probs).
GRADIENT_METHODS = {
    "GA": (("forget",), None),
    "GradDiff": (("forget", "retain"), None),
    "NPO": (("forget", "retain"), "logprobs"),
    "SimNPO": (("forget", "retain"), None),
    "IdkDPO": (("forget", "reference", "retain"), "logprobs"),
    "WGA": (("forget", "retain"), None),
    "AltPO": (("forget", "reference", "retain"), "logprobs"),
    "CEU": (("forget", "retain"), None),
    "PDU": (("forget", "retain"), None),
    "SatImp": (("forget", "retain"), None),
    "UNDIAL": (("forget", "retain"), None),
    "RMU": (("forget", "retain"), "frozen copy"),
}
# The passes a gradient method the table does not list is assumed to keep.
ASSUMED_SETS = ("forget", "retain")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


@dataclass(frozen=True)
class Parts:
    """Bytes live at a stage's peak, by what holds them."""

    weights: float = 0.0
    gradients: float = 0.0
    optimizer: float = 0.0
    activations: float = 0.0
    reference: float = 0.0

    @property
    def total(self) -> float:
        """Sum of the parts (the stage's peak)."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.reference


@dataclass(frozen=True)
class Stage:
    """One stage's peak per GPU and how it was sized."""

    name: str
    parts: Parts
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Setup:
    """What the memory model reads from the config besides the architecture and lengths."""

    world: int
    cuda: bool
    weight_bytes: int
    batch_tokens: int | None


def setup_of(cfg: DictConfig) -> Setup:
    """World size, device and weight dtype of the planned run."""
    dtype = str(cfg.model.get("dtype", "float32"))
    return Setup(
        world=int(cfg.plan.world_size),
        cuda=str(cfg.plan.device) == "cuda",
        weight_bytes=DTYPE_BYTES[dtype],
        batch_tokens=cfg.get("batch_tokens"),
    )


def plan_stages(cfg: DictConfig, arch: Arch, lengths: Lengths) -> list[Stage]:
    """Every stage the run goes through, in order."""
    setup = setup_of(cfg)
    stages = []
    if cfg.finetune.get("enabled", False):
        stages.append(finetune_stage(cfg, arch, lengths, setup))
    stages.append(unlearn_stage(cfg, arch, lengths, setup))
    stages.append(eval_stage(arch, lengths, setup))
    return stages


def method_name(cfg: DictConfig) -> str:
    """The method's class name (``_target_``'s last part)."""
    return str(cfg.method.get("_target_", "")).rsplit(".", 1)[-1]


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class Training:
    """One training loop's shape: what it trains and what each micro-batch runs."""

    trained: int  # parameters the optimizer updates
    batch: int  # items per micro-batch (before splitting over ranks)
    lengths: tuple[int, ...]  # padded length of each pass kept for the backward
    depth: int  # decoder blocks run (all, or up to RMU's layer)
    logits: bool  # whether the passes end in the LM head's log-softmax
    checkpointing: bool
    compute_bytes: int


def training_parts(arch: Arch, setup: Setup, train: Training) -> Parts:
    """Peak of a training step: start of the backward, or its end when gradients outweigh."""
    world = setup.world
    weights = _train_weights(arch, setup, train)
    optimizer = 8.0 * train.trained / world
    grads = 4.0 * train.trained / world
    head = 4.0 * _head_params(arch) / world if train.logits else 0.0
    acts = _train_activations(arch, setup, train)
    # fused AdamW's step held two fp32 temporaries of the largest trained tensor (seen on CPU)
    step = 2 * 4.0 * _largest(arch, train) / world
    if grads + step >= acts + head:
        return Parts(weights, grads, optimizer + step, _backward_transient(arch, train, setup), 0)
    return Parts(weights, head, optimizer, acts, 0.0)


def _train_weights(arch: Arch, setup: Setup, train: Training) -> float:
    """fp32 masters, plus the bf16 compute copies (autocast cache or FSDP's gathered blocks)."""
    params = arch.n_params
    half_compute = train.compute_bytes == 2
    if setup.world == 1:
        cache = 2.0 * _matmul_params(arch) if half_compute and not train.checkpointing else 0.0
        if half_compute and train.checkpointing:
            cache = 2.0 * arch.layer_params(0) + 2.0 * _head_params(arch)
        return 4.0 * params + cache
    gathered = train.compute_bytes * (2 * arch.layer_params(0) + _root_params(arch))
    # on CUDA the plain model waits in host memory while the shards train (parked_on_host)
    original = 0.0 if setup.cuda else setup.weight_bytes * params
    return original + 4.0 * params / setup.world + gathered


def _train_activations(arch: Arch, setup: Setup, train: Training) -> float:
    """Saved activations of every kept pass, plus the LM head's backward buffers of the last."""
    items = math.ceil(train.batch / setup.world)
    c = train.compute_bytes
    outside = 3 * c * arch.hidden + (4 * arch.vocab if train.logits else 0)
    saved = 0.0
    for length in train.lengths:
        block = c * arch.hidden if train.checkpointing else _block_bytes(arch, c, length)
        saved += items * length * (train.depth * block + outside)
    last = items * train.lengths[-1]
    block = _block_bytes(arch, c, train.lengths[-1])
    if train.logits:  # the head's backward: the log-softmax's gradient and the logits'
        return saved + (8 + c) * arch.vocab * last + (block * last if train.checkpointing else 0)
    # RMU: the frozen copy's retain pass runs after both passes, one block at a time
    return saved + last * c * (4 * arch.hidden + 3 * arch.intermediate)


def _backward_transient(arch: Arch, train: Training, setup: Setup) -> float:
    """What the end of a backward still holds besides the gradients: one block's worth."""
    items = math.ceil(train.batch / setup.world)
    longest = max(train.lengths)
    return _block_bytes(arch, train.compute_bytes, longest) * items * longest


def _block_bytes(arch: Arch, c: int, length: int) -> float:
    """Bytes autograd saves per token in one decoder block of a padded batch of ``length``.

    See the module docstring; keys and values are saved expanded to all heads (the padding
    mask sends sdpa through ``repeat_kv``), and each block keeps an fp32 mask row per token.
    """
    return c * (10 * arch.hidden + 4 * arch.intermediate) + 4 * arch.heads + 8 + 4 * length


def _largest(arch: Arch, train: Training) -> int:
    """Elements of the largest parameter tensor (bounded by what trains)."""
    return min(max(arch.params.values()), train.trained)


def _head_params(arch: Arch) -> int:
    """Parameters of the LM head (the embedding when tied)."""
    return arch.vocab * arch.hidden


def _root_params(arch: Arch) -> int:
    """Parameters outside the decoder blocks (embedding, LM head, final norm)."""
    return sum(n for name, n in arch.params.items() if ".layers." not in name)


def _matmul_params(arch: Arch) -> int:
    """Parameters autocast casts to bf16: every linear weight (the LM head included)."""
    linear = sum(n for name, n in arch.params.items() if "norm" not in name and "embed" not in name)
    tied = not any("lm_head" in name for name in arch.params)
    return linear + (_head_params(arch) if tied else 0)


def checkpointing_on(setting: object, arch: Arch) -> bool:
    """Whether the loop checkpoints: the setting, or (null) models above 1B parameters."""
    if setting is None:
        return arch.n_params > CHECKPOINTING_MIN_PARAMS
    return bool(setting)


def _compute_bytes(setup: Setup, bf16: bool = False) -> int:
    if not setup.cuda:
        return 4
    return 2 if setup.weight_bytes == 2 or bf16 else 4


def trained_params(arch: Arch, pattern: str | None, depth: int | None = None) -> int:
    """Parameters matching ``pattern`` (all when None) that the loss reaches (blocks < depth)."""
    regex = re.compile(pattern) if pattern else None
    total = 0
    for name, count in arch.params.items():
        if regex is not None and not regex.search(name):
            continue
        if depth is not None and not _reached(name, depth):
            continue
        total += count
    return total


def _reached(name: str, depth: int) -> bool:
    """Whether a loss reading the output of block ``depth - 1`` gives ``name`` a gradient."""
    match = re.search(r"\.layers\.(\d+)\.", name)
    if match:
        return int(match.group(1)) < depth
    return "embed" in name


def finetune_stage(cfg: DictConfig, arch: Arch, lengths: Lengths, setup: Setup) -> Stage:
    """The cached fine-tuning stage (full fine-tuning, one pass per step)."""
    ft = cfg.finetune
    checkpointing = checkpointing_on(ft.get("gradient_checkpointing"), arch)
    train = Training(
        trained=arch.n_params,
        batch=lengths.items("finetune", int(ft.batch_size)),
        lengths=(lengths.finetune,),
        depth=arch.layers,
        logits=True,
        checkpointing=checkpointing,
        compute_bytes=_compute_bytes(setup),
    )
    parts = training_parts(arch, setup, train)
    note = f"batch {ft.batch_size} x {lengths.finetune} tokens, checkpointing {checkpointing}"
    return Stage("finetune", parts, (note,))


def unlearn_stage(cfg: DictConfig, arch: Arch, lengths: Lengths, setup: Setup) -> Stage:
    """The unlearning method: LUNAR's closed form, or a gradient method on the shared loop."""
    name = method_name(cfg)
    if name == "LUNAR":
        return lunar_stage(cfg, arch, lengths, setup)
    if "loop" not in cfg.method:
        raise ValueError(
            f"The planner cannot size method {name!r} (no method.loop). Fix: plan a gradient "
            "method on the shared loop or LUNAR."
        )
    return gradient_stage(cfg, arch, lengths, setup, name)


def gradient_stage(cfg: DictConfig, arch: Arch, lengths: Lengths, setup: Setup, name: str) -> Stage:
    """A gradient method: its kept passes, trained parameters and reference."""
    method, loop = cfg.method, cfg.method.loop
    sets, reference = GRADIENT_METHODS.get(name, (ASSUMED_SETS, None))
    by_set = {"forget": lengths.forget, "retain": lengths.retain, "reference": lengths.reference}
    depth = int(method.layer) + 1 if name == "RMU" else arch.layers
    reach = depth if name == "RMU" else None
    checkpointing = checkpointing_on(loop.get("gradient_checkpointing"), arch)
    train = Training(
        trained=trained_params(arch, method.get("trainable_params"), reach),
        batch=lengths.items("forget", int(loop.batch_size)),
        lengths=tuple(by_set[s] for s in sets if by_set[s] > 0) or (lengths.forget,),
        depth=depth,
        logits=name != "RMU",
        checkpointing=checkpointing,
        compute_bytes=_compute_bytes(setup, bool(loop.get("bf16", False))),
    )
    parts = training_parts(arch, setup, train)
    if reference == "frozen copy":
        parts = replace(parts, reference=float(setup.weight_bytes * arch.n_params))
    notes = [
        f"{len(train.lengths)} pass(es) of {math.ceil(train.batch / setup.world)} items "
        f"x {'/'.join(map(str, train.lengths))} tokens per micro-batch, checkpointing "
        f"{checkpointing}, {train.trained / 1e6:.1f}M trained params"
    ]
    if name not in GRADIENT_METHODS:
        notes.append(f"{name}: assumed {' + '.join(ASSUMED_SETS)} passes per micro-batch")
    if reference == "logprobs":
        notes.append("reference log-probs precomputed (a few bytes per item)")
    return Stage("unlearn", parts, tuple(notes))


# ---------------------------------------------------------------- LUNAR and evaluation


def lunar_stage(cfg: DictConfig, arch: Arch, lengths: Lengths, setup: Setup) -> Stage:
    """LUNAR: inference passes up to the edited layer, Gram matrices and the ridge solve."""
    method = cfg.method
    layers = method.get("layers")
    n_layers = int(method.get("sweep_top_k", 1)) if layers == "auto" else len(layers)
    gram = DTYPE_BYTES[str(method.get("gram_dtype", "float64"))]
    f = arch.intermediate
    closed = str(method.get("solver", "closed_form")) == "closed_form"
    # Accumulating holds two Gram matrices per edited layer, a batch's product and its weighted
    # copy; the solve a sum, an identity, its scaled copy or the system, and the LU factors.
    accumulate = (2 * n_layers + 2) * f * f * gram if closed else 0.0
    solve = (2 * n_layers + 4) * f * f * gram if closed else 0.0
    batch = int(method.get("activation_batch_size", 16))
    items = max(lengths.items(name, batch) for name in ("forget", "retain", "reference"))
    longest = max(lengths.forget, lengths.retain, lengths.reference)
    if method.get("share_prefix", True) and closed:
        longest -= lengths.shared_prefix  # the shared head runs once, batch 1
    c = setup.weight_bytes if setup.cuda else 4
    # per token and edited layer: captured down_proj input and output, their fp32 rows, the
    # input rows in the Gram dtype and their shifted/pinned split
    per_token = n_layers * ((c + 4) * (f + arch.hidden) + 2 * gram * f)
    rows = per_token * _capped(items, longest, setup.batch_tokens) * longest
    weights = float(setup.weight_bytes * arch.n_params)
    if accumulate + rows >= solve:
        parts = Parts(weights, 0.0, accumulate, rows, 0.0)
    else:
        parts = Parts(weights, 0.0, solve, 0.0, 0.0)
    gram_dtype = method.get("gram_dtype", "float64")
    note = f"{n_layers} edited layer(s), Gram in {gram_dtype} (optimizer column)"
    return Stage("unlearn", parts, (note, f"activation batches of {items} x {longest} tokens"))


def eval_stage(arch: Arch, lengths: Lengths, setup: Setup) -> Stage:
    """Evaluation: the larger of a scoring pass (log-probs) and a greedy generation."""
    c = setup.weight_bytes
    weights = float(c * arch.n_params)
    batch = lengths.items("evaluate", lengths.eval_batch_size)
    longest = max(lengths.forget, lengths.retain)
    tokens = _capped(batch, longest, setup.batch_tokens) * longest
    # logits in the model dtype, an fp32 copy when that is half, the fp32 log-softmax; one block
    logit_bytes = c + (4 if c == 2 else 0) + 4
    block = c * (4 * arch.hidden + 3 * arch.intermediate)
    scoring = tokens * max(logit_bytes * arch.vocab, block)  # the head runs after the blocks
    span = lengths.prompt + lengths.max_new_tokens
    rows = _capped(batch, span, setup.batch_tokens)
    kv_cache = 2 * arch.layers * arch.kv_dim * c * rows * span
    # generate() computes the last position's logits only; ranked generation keeps every step's
    kept_steps = lengths.max_new_tokens if lengths.ranked_generation else 1
    step_logits = 4 * arch.vocab * rows * (kept_steps + 1)
    generation = kv_cache + step_logits + rows * lengths.prompt * block
    notes = (
        f"scoring {tokens} tokens/pass; generation {rows} x ({lengths.prompt} + "
        f"{lengths.max_new_tokens}) tokens",
    )
    return Stage("evaluate", Parts(weights, 0.0, 0.0, max(scoring, generation), 0.0), notes)


def _capped(batch: int, length: int, budget: int | None) -> int:
    """Items per inference batch: ``batch``, fewer when ``batch_tokens`` caps padded tokens."""
    if budget is None or length <= 0:
        return batch
    return max(1, min(batch, budget // length))
