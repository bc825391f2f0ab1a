"""Adapt a causal LM into a masked-diffusion LM: the recipe behind ``aod-smol-dlm``.

The way Dream was adapted from Qwen: attention made bidirectional (a 4D mask, as
``Denoiser.logits`` passes it), an unused token as the mask, and the causal head's alignment kept
(the hidden state at i-1 predicts token i). Training is LLaDA's SFT objective: the prompt is never
masked; the response's tokens are masked with probability t ~ U(eps, 1) per example; the loss is
the cross-entropy on masked tokens, weighted 1/t and normalised by the response length.

Two kinds of examples are mixed, both conditioned through ``render_prompt`` (the one template):

- free mode: the prompt with the compact schema, then the whole record's JSON masked, padded with
  end-of-text tokens;
- skeleton mode: the prompt without the schema, then the record in the layout skeleton mode
  generates (``skeleton.layout_record``) with only the value-slot tokens masked.

The adapter is small: low-rank (LoRA) deltas on the linear layers of the upper blocks, plus the
mask token's embedding row. ``models.apply_adapter`` merges it into a base model in place.

Corpus format (a folder): ``train.jsonl`` and optionally ``heldout.jsonl`` (scored during
training), one JSON object per line::

    {"instruction": "Generate a customer record.\\nConstraints: country must be Canada.",
     "record": {"name": "Ann Lee", "country": "Canada"},
     "schema": {"type": "object", ...},      # optional: free-mode examples need it
     "schema_id": "customer"}                 # optional: a name for the record's table
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aod_ops.dlm.denoiser import Denoiser
from aod_ops.dlm.models import ADAPTER_CONFIG, ADAPTER_FILE, MASK_KEY, smollm2_denoiser
from aod_ops.dlm.prompting import render_prompt
from aod_ops.dlm.skeleton import layout_record
from aod_ops.errors import DataError, ModelError
from aod_ops.hf import fast_dtype

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --- corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One corpus line: an instruction and the record it asks for (and its schema, if known)."""

    instruction: str
    record: Any
    schema: dict[str, Any] | None = None
    schema_id: str = ""


def read_examples(path: Path) -> list[Example]:
    """The examples of one JSONL file; a malformed line is a ``DataError`` naming file and line."""
    if not path.is_file():
        raise DataError(f"corpus file {path} does not exist")
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not JSON ({err.msg})") from None
            if not isinstance(raw, dict):
                raise DataError(f"{where}: expected a JSON object with 'instruction' and 'record'")
            instruction, schema, schema_id = (
                raw.get("instruction"),
                raw.get("schema"),
                raw.get("schema_id", ""),
            )
            if not isinstance(instruction, str) or not instruction.strip():
                raise DataError(f"{where}: 'instruction' must be a non-empty string")
            if "record" not in raw or not isinstance(raw["record"], dict | list):
                raise DataError(f"{where}: 'record' must be a JSON object or array")
            if schema is not None and not isinstance(schema, dict):
                raise DataError(f"{where}: 'schema' must be a JSON Schema object when given")
            if not isinstance(schema_id, str):
                raise DataError(f"{where}: 'schema_id' must be a string")
            examples.append(Example(instruction, raw["record"], schema, schema_id))
    if not examples:
        raise DataError(f"corpus file {path} has no examples")
    return examples


def read_corpus(corpus_dir: Path) -> tuple[list[Example], list[Example]]:
    """``(train, heldout)`` from a corpus folder; ``heldout`` is empty when the file is absent."""
    if not corpus_dir.is_dir():
        raise DataError(f"corpus folder {corpus_dir} does not exist")
    heldout = corpus_dir / "heldout.jsonl"
    return read_examples(corpus_dir / "train.jsonl"), read_examples(heldout) if heldout.is_file() else []


# --- examples as token sequences -------------------------------------------------------------


@dataclass(frozen=True)
class TrainItem:
    """A token sequence and which of its positions the objective may mask (the response)."""

    ids: list[int]
    maskable: list[bool]
    prompt_len: int


def free_item(denoiser: Denoiser, example: Example, padding: int) -> TrainItem:
    """Free mode: prompt with the schema, then the record's JSON and ``padding`` end-of-text tokens."""
    prompt = denoiser.encode(render_prompt(example.instruction, example.schema))
    response = denoiser.encode(json.dumps(example.record, ensure_ascii=False)) + [denoiser.eos_id] * padding
    return TrainItem(prompt + response, [False] * len(prompt) + [True] * len(response), len(prompt))


def skeleton_item(denoiser: Denoiser, example: Example) -> TrainItem:
    """Skeleton mode: prompt without the schema, then the record's skeleton; only slots maskable."""
    prompt = denoiser.encode(render_prompt(example.instruction))
    ids, slots = layout_record(denoiser, example.record)
    return TrainItem(prompt + ids, [False] * len(prompt) + slots, len(prompt))


def make_item(denoiser: Denoiser, example: Example, skeleton: bool, rng: random.Random) -> TrainItem:
    """The example in one mode; free mode pads with a random number of end-of-text tokens.

    The random padding teaches the model to close the record and fill any remaining response
    length with end-of-text, whatever length the sampler gives it.
    """
    if skeleton or example.schema is None:
        return skeleton_item(denoiser, example)
    return free_item(denoiser, example, rng.randint(1, 32))


# --- the objective ---------------------------------------------------------------------------


@dataclass
class Batch:
    """Padded items, all ``[B, L]``: ids, attention (False on padding), maskable, prompt positions."""

    ids: torch.Tensor
    attention: torch.Tensor
    maskable: torch.Tensor
    prompt: torch.Tensor

    @classmethod
    def of(cls, items: Sequence[TrainItem], pad_id: int) -> Batch:
        """Right-pad ``items`` with ``pad_id`` (attention False, never masked)."""
        width = max(len(it.ids) for it in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.bool)
        maskable = torch.zeros((len(items), width), dtype=torch.bool)
        prompt = torch.zeros((len(items), width), dtype=torch.bool)
        for b, it in enumerate(items):
            ids[b, : len(it.ids)] = torch.tensor(it.ids)
            attention[b, : len(it.ids)] = True
            maskable[b, : len(it.ids)] = torch.tensor(it.maskable)
            prompt[b, : it.prompt_len] = True
        return cls(ids, attention, maskable, prompt)


def corrupt(
    batch: Batch, mask_id: int, t: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy ids, masked)``: each maskable token of row b replaced by the mask w.p. ``t[b]``."""
    draw = torch.rand(batch.ids.shape, generator=generator)
    masked = batch.maskable & (draw < t[:, None])
    return torch.where(masked, torch.full_like(batch.ids, mask_id), batch.ids), masked


def sft_loss(
    logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, t: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """LLaDA's SFT loss: sum over masked tokens of CE / t / response length, averaged over the batch.

    ``logits`` ``[N, V]`` and ``targets`` ``[N]`` are the N masked tokens, ``rows`` ``[N]`` their
    batch rows; ``t`` and ``lengths`` (maskable tokens per row) are ``[B]``.
    """
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return (ce / (t[rows] * lengths[rows])).sum() / len(t)


# --- the adapter -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterConfig:
    """Shape of the adapter: LoRA rank and scale, the blocks from ``first_layer`` up, the targets.

    The defaults are ``aod-smol-dlm``'s.
    """

    rank: int = 32
    alpha: float = 64.0
    first_layer: int = 12
    targets: tuple[str, ...] = LORA_TARGETS
    # Training the mask row back-propagates through every layer: a third more compute per step.
    train_mask_embedding: bool = False


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank delta ``(alpha / rank) * B @ A``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base output plus the low-rank delta."""
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale


def _embedding_tied(model: Any) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


class DiffusionModel(nn.Module):
    """A causal LM under training as a masked-diffusion model: base frozen, adapter trainable.

    The base model is changed in place (its upper linear layers are wrapped); ``adapter_tensors``
    gives what ``apply_adapter`` merges into a fresh copy of the base.
    """

    def __init__(self, denoiser: Denoiser, config: AdapterConfig) -> None:
        super().__init__()
        self.model = denoiser.model
        self.mask_id = denoiser.mask_id
        self.shift = denoiser.shift
        self.config = config
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.lora: dict[str, LoRALinear] = {}
        layers = self.model.model.layers
        if not 0 <= config.first_layer < len(layers):
            raise ModelError(f"first_layer {config.first_layer} is outside the model's {len(layers)} layers")
        for i in range(config.first_layer, len(layers)):
            for name, module in list(layers[i].named_modules()):
                if name.rsplit(".", 1)[-1] in config.targets and isinstance(module, nn.Linear):
                    parent = layers[i].get_submodule(name.rsplit(".", 1)[0]) if "." in name else layers[i]
                    wrapped = LoRALinear(module, config.rank, config.alpha)
                    setattr(parent, name.rsplit(".", 1)[-1], wrapped)
                    self.lora[f"model.layers.{i}.{name}"] = wrapped
        self.loras = nn.ModuleList(self.lora.values())
        row = self.model.get_input_embeddings().weight[self.mask_id].detach().float().clone()
        self.mask_embedding = nn.Parameter(row, requires_grad=config.train_mask_embedding)
        self.tied = _embedding_tied(self.model)

    def logits(
        self, ids: torch.Tensor, attention: torch.Tensor, prompt: torch.Tensor, where: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``[N, V]`` for the positions in ``where``, exactly as ``Denoiser.logits`` scores them.

        Attention is that of the sampler: a prefix-LM mask (``prompt`` positions attend to the
        prompt only, the record's positions to everything but padding). The mask row of the
        embedding is this module's ``mask_embedding``; with tied embeddings it is also the mask
        token's row of the output layer, as it will be once merged.
        """
        keys = attention[:, None, :] & (~prompt[:, :, None] | prompt[:, None, :])
        mask4d = keys[:, None]
        embeds = self.model.get_input_embeddings()(ids)
        is_mask = (ids == self.mask_id)[..., None]
        embeds = torch.where(is_mask, self.mask_embedding.to(embeds.dtype), embeds)
        hidden = self.model.model(inputs_embeds=embeds, attention_mask=mask4d).last_hidden_state
        rows, cols = where.nonzero(as_tuple=True)
        if self.shift:
            cols = (cols - 1).clamp_min(0)
        picked = hidden[rows, cols]
        out = self.model.get_output_embeddings()(picked)
        if self.tied:
            mask_logit = picked @ self.mask_embedding.to(picked.dtype)
            out = torch.cat([out[:, : self.mask_id], mask_logit[:, None], out[:, self.mask_id + 1 :]], dim=1)
        return out

    def trainable(self) -> dict[str, nn.Parameter]:
        """The adapter's parameters by name (LoRA factors, the mask row when trained)."""
        params = {}
        for name, lora in self.lora.items():
            params[f"{name}.lora_A"] = lora.lora_A
            params[f"{name}.lora_B"] = lora.lora_B
        if self.config.train_mask_embedding:
            params[MASK_KEY] = self.mask_embedding
        return params

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The adapter as shipped: bf16, LoRA scale folded into B, the mask row always included."""
        out = {}
        for name, lora in self.lora.items():
            out[f"{name}.lora_A"] = lora.lora_A.detach().to(torch.bfloat16).contiguous()
            out[f"{name}.lora_B"] = (lora.lora_B.detach() * lora.scale).to(torch.bfloat16).contiguous()
        out[MASK_KEY] = self.mask_embedding.detach().to(torch.bfloat16).contiguous()
        return out

    def loss(self, batch: Batch, t: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """The SFT loss of ``batch`` at mask ratios ``t`` and the number of masked tokens.

        Noise is drawn on the CPU from ``generator`` (reproducible on any device).
        """
        noisy, masked = corrupt(batch, self.mask_id, t, generator)
        if not masked.any():
            return torch.zeros((), requires_grad=True), 0
        device = self.mask_embedding.device
        logits = self.logits(
            noisy.to(device), batch.attention.to(device), batch.prompt.to(device), masked.to(device)
        )
        rows, _ = masked.nonzero(as_tuple=True)
        lengths = batch.maskable.sum(1).clamp_min(1).float()
        targets = batch.ids[masked]
        return sft_loss(logits, targets.to(device), rows.to(device), t.to(device), lengths.to(device)), len(
            targets
        )


def save_adapter(dm: DiffusionModel, out_dir: Path, info: dict[str, Any]) -> None:
    """Write ``adapter.safetensors`` and ``adapter_config.json`` (shape, base, ``info``)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = dm.model.config
    meta = {
        "format": "aod-lora-1",
        "mask_token_id": dm.mask_id,
        "base": {
            "model_type": cfg.model_type,
            "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "vocab_size": cfg.vocab_size,
        },
        "adapter": asdict(dm.config),
        **info,
    }
    _atomic(out_dir / ADAPTER_FILE, lambda p: save_file(dm.adapter_tensors(), str(p)))
    _atomic(out_dir / ADAPTER_CONFIG, lambda p: p.write_text(json.dumps(meta, indent=1) + "\n"))


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    # Write beside and rename, so an interrupted save never leaves a half-written file behind.
    staging = path.with_name(path.name + ".tmp")
    write(staging)
    os.replace(staging, path)


# --- training --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of ``adapt`` (the defaults trained ``aod-smol-dlm``)."""

    batch_size: int = 6
    lr: float = 1e-3
    warmup_steps: int = 10
    skeleton_share: float = 0.85
    eps: float = 1e-3
    max_tokens: int = 384
    checkpoint_minutes: float = 30.0
    eval_examples: int = 32
    seed: int = 0


@dataclass(frozen=True)
class AdaptResult:
    """What a run of ``adapt`` did: steps, minutes (over all resumed runs), held-out losses."""

    steps: int
    minutes: float
    train_loss: float | None
    heldout_ce_initial: float | None
    heldout_ce: float | None
    out_dir: Path


_POOL_BATCHES = 16
_HELDOUT_BATCH = 8


def _pool(
    denoiser: Denoiser, examples: Sequence[Example], cfg: TrainConfig, pool_index: int
) -> list[list[TrainItem]]:
    """The batches of one pool: drawn from the pool's own seed, grouped by length to limit padding.

    A pool depends only on the seed and its index, so a resumed run sees the same data it would
    have seen without the interruption.
    """
    rng = random.Random(f"{cfg.seed}:{pool_index}")
    items: list[TrainItem] = []
    while len(items) < _POOL_BATCHES * cfg.batch_size:
        example = examples[rng.randrange(len(examples))]
        item = make_item(denoiser, example, rng.random() < cfg.skeleton_share, rng)
        if len(item.ids) <= cfg.max_tokens and any(item.maskable):
            items.append(item)
    items.sort(key=lambda it: len(it.ids))
    batches = [items[i : i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]
    rng.shuffle(batches)
    return batches


def training_batches(
    denoiser: Denoiser, examples: Sequence[Example], cfg: TrainConfig, step: int
) -> Iterator[Batch]:
    """The training batches from ``step`` on: the same ones whether or not the run was resumed."""
    pool_index, offset = divmod(step, _POOL_BATCHES)
    while True:
        for items in _pool(denoiser, examples, cfg, pool_index)[offset:]:
            yield Batch.of(items, denoiser.eos_id)
        pool_index, offset = pool_index + 1, 0


@dataclass
class HeldoutSet:
    """Fixed noisy held-out batches, so every evaluation scores the same masked tokens."""

    batches: list[tuple[Batch, torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        denoiser: Denoiser,
        examples: Sequence[Example],
        n: int,
        cfg: TrainConfig,
        modes: Sequence[bool] = (True, False),
    ) -> HeldoutSet:
        """``n`` held-out examples masked at seeded ratios, in ``modes`` in turn (True: skeleton)."""
        rng = random.Random(f"heldout:{cfg.seed}")
        chosen = rng.sample(list(examples), min(n, len(examples)))
        items = [make_item(denoiser, ex, modes[i % len(modes)], rng) for i, ex in enumerate(chosen)]
        items = [it for it in items if len(it.ids) <= cfg.max_tokens]
        generator = torch.Generator().manual_seed(cfg.seed)
        out = cls()
        # A fixed batch size: the masks drawn depend on the batch shapes, not on the training batch.
        for lo in range(0, len(items), _HELDOUT_BATCH):
            batch = Batch.of(items[lo : lo + _HELDOUT_BATCH], denoiser.eos_id)
            t = torch.rand(len(batch.ids), generator=generator) * (1 - cfg.eps) + cfg.eps
            noisy, masked = corrupt(batch, denoiser.mask_id, t, generator)
            out.batches.append((batch, noisy, masked))
        return out

    @torch.no_grad()
    def cross_entropy(self, model: DiffusionModel) -> float:
        """Mean cross-entropy per masked token (unweighted) of ``model``."""
        total, count = 0.0, 0
        for batch, noisy, masked in self.batches:
            if not masked.any():
                continue
            device = model.mask_embedding.device
            parts = (noisy, batch.attention, batch.prompt, masked)
            logits = model.logits(*(p.to(device) for p in parts)).float()
            total += float(F.cross_entropy(logits, batch.ids[masked], reduction="sum"))
            count += int(masked.sum())
        return total / max(count, 1)


def _lr(cfg: TrainConfig, step: int, fraction: float) -> float:
    # Linear warm-up, then a linear decay to a tenth over the time budget.
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * (1.0 - 0.9 * min(fraction, 1.0))


def adapt(
    corpus_dir: Path,
    out_dir: Path,
    minutes: float,
    device: str = "cpu",
    denoiser: Denoiser | None = None,
    adapter_config: AdapterConfig = AdapterConfig(),
    train_config: TrainConfig = TrainConfig(),
    max_steps: int | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> AdaptResult:
    """Train the adapter on ``corpus_dir`` for ``minutes`` (in all, over resumed runs) into ``out_dir``.

    Resumes from ``out_dir/checkpoint.pt`` when it exists (same adapter shape required); saves a
    checkpoint every ``checkpoint_minutes`` and at the end, with the adapter itself
    (``adapter.safetensors`` + ``adapter_config.json``: a folder ``apply_adapter`` and
    ``smollm2_denoiser`` take). ``denoiser`` defaults to the unadapted SmolLM2 base; it is changed
    in place. Progress (loss per step) goes to ``echo`` (default: the console) and ``log.jsonl``.
    """
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but torch sees no CUDA device")
    say = echo or _console_echo()
    train, heldout = read_corpus(corpus_dir)
    if denoiser is None:
        denoiser = smollm2_denoiser(dtype=torch.float32)
    cfg = train_config
    torch.manual_seed(cfg.seed)  # the LoRA factors' initial values
    dm = DiffusionModel(denoiser, adapter_config).to(device)
    params = dm.trainable()
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=0.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / CHECKPOINT_FILE
    step, seconds, initial, last_loss = 0, 0.0, None, None
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["adapter_config"] != asdict(adapter_config):
            raise ModelError(
                f"{checkpoint} was trained with adapter {state['adapter_config']}, "
                f"not {asdict(adapter_config)}: use another --out folder"
            )
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        step, seconds, initial = state["step"], state["seconds"], state["heldout_ce_initial"]
        say(f"resumed from {checkpoint} at step {step} ({seconds / 60:.1f} min)")
    # Mixed precision only where bf16 is native: an AVX2 CPU emulates it several times slower.
    autocast = torch.autocast(
        device.split(":")[0], dtype=torch.bfloat16, enabled=fast_dtype(device) == torch.bfloat16
    )
    held = HeldoutSet.build(denoiser, heldout, cfg.eval_examples, cfg) if heldout else None

    def evaluate() -> float | None:
        if held is None:
            return None
        dm.eval()
        with autocast:
            ce = held.cross_entropy(dm)
        dm.train()
        return ce

    if step == 0 and held is not None:
        initial = evaluate()
        say(f"held-out masked cross-entropy before training: {initial:.3f}")
    budget = minutes * 60.0
    started = time.monotonic() - seconds
    last_save = time.monotonic()

    def save(heldout_ce: float | None) -> None:
        elapsed = time.monotonic() - started
        state = {
            "adapter_config": asdict(adapter_config),
            "train_config": asdict(cfg),
            "params": {k: v.detach().cpu() for k, v in params.items()},
            "optimizer": optimizer.state_dict(),
            "step": step,
            "seconds": elapsed,
            "heldout_ce_initial": initial,
        }
        _atomic(checkpoint, lambda p: torch.save(state, p))
        info = {
            "training": {
                "corpus": str(corpus_dir),
                "train_examples": len(train),
                "steps": step,
                "minutes": round(elapsed / 60, 1),
                "train_loss": last_loss,
                "heldout_ce_initial": initial,
                "heldout_ce": heldout_ce,
                "train_config": asdict(cfg),
            }
        }
        save_adapter(dm, out_dir, info)

    dm.train()
    batches = training_batches(denoiser, train, cfg, step)
    log = (out_dir / LOG_FILE).open("a")
    smoothed: float | None = None
    try:
        while time.monotonic() - started < budget and (max_steps is None or step < max_steps):
            batch = next(batches)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            t = torch.rand(len(batch.ids), generator=generator) * (1 - cfg.eps) + cfg.eps
            for group in optimizer.param_groups:
                group["lr"] = _lr(cfg, step, (time.monotonic() - started) / budget)
            with autocast:
                loss, masked = dm.loss(batch, t, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            optimizer.step()
            step += 1
            last_loss = float(loss.detach())
            smoothed = last_loss if smoothed is None else 0.95 * smoothed + 0.05 * last_loss
            elapsed = time.monotonic() - started
            say(f"step {step:5d}  loss {last_loss:7.3f}  avg {smoothed:7.3f}  masked {masked:4d}  "
                f"{elapsed / 60:5.1f}/{minutes:g} min")  # fmt: skip
            log.write(
                json.dumps({"step": step, "loss": last_loss, "masked": masked, "seconds": elapsed}) + "\n"
            )
            log.flush()
            if time.monotonic() - last_save >= cfg.checkpoint_minutes * 60:
                ce = evaluate()
                say(
                    f"checkpoint at step {step}" + (f": held-out masked cross-entropy {ce:.3f}" if ce else "")
                )
                log.write(json.dumps({"step": step, "heldout_ce": ce}) + "\n")
                save(ce)
                last_save = time.monotonic()
    finally:
        log.close()
    final = evaluate()
    if final is not None:
        say(f"held-out masked cross-entropy after {step} steps: {final:.3f} (before: {initial:.3f})")
    save(final)
    return AdaptResult(step, (time.monotonic() - started) / 60, last_loss, initial, final, out_dir)


def _console_echo() -> Callable[[str], None]:
    from rich.console import Console

    console = Console(highlight=False)
    return lambda line: console.print(line)
