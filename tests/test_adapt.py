"""The masked-diffusion adaptation recipe (aod_ops.dlm.adapt), on a tiny random bidirectional Llama."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aod_ops.dlm.adapt import (
    AdapterConfig,
    Batch,
    DiffusionModel,
    Example,
    TrainConfig,
    TrainItem,
    adapt,
    corrupt,
    free_item,
    read_corpus,
    save_adapter,
    sft_loss,
    skeleton_item,
    training_batches,
)
from aod_ops.dlm.models import apply_adapter, tiny_random_denoiser
from aod_ops.dlm.prompting import render_prompt
from aod_ops.errors import DataError, ModelError

SCHEMA = {
    "type": "object",
    "properties": {"c": {"type": "string", "enum": ["ab", "cd"]}, "n": {"type": "integer"}},
}
FAST = TrainConfig(batch_size=4, lr=2e-2, warmup_steps=1, eval_examples=8, checkpoint_minutes=60)
SMALL = AdapterConfig(rank=4, alpha=8, first_layer=0, train_mask_embedding=True)


def write_corpus(folder: Path, n: int = 16) -> Path:
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        record = {"c": rng.choice(["ab", "cd"]), "n": rng.randint(1, 9)}
        example = {"instruction": "Give a pair.", "schema": SCHEMA, "record": record, "schema_id": "pair"}
        lines.append(json.dumps(example))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "heldout.jsonl").write_text("\n".join(lines[:8]) + "\n")
    return folder


def test_free_item_masks_only_the_response_and_pads_with_eos() -> None:
    den = tiny_random_denoiser()
    example = Example("Give a pair.", {"c": "ab", "n": 3}, SCHEMA)
    item = free_item(den, example, padding=2)
    prompt = den.encode(render_prompt("Give a pair.", SCHEMA))
    assert item.ids[: len(prompt)] == prompt
    assert item.maskable == [False] * len(prompt) + [True] * (len(item.ids) - len(prompt))
    assert den.decode(item.ids[len(prompt) : -2]) == '{"c": "ab", "n": 3}'
    assert item.ids[-2:] == [den.eos_id, den.eos_id]


def test_skeleton_item_masks_only_value_slots() -> None:
    den = tiny_random_denoiser()
    item = skeleton_item(den, Example("Give a pair.", {"c": "ab", "n": 3}))
    prompt_len = len(den.encode(render_prompt("Give a pair.")))
    assert not any(item.maskable[:prompt_len])
    slots = [t for t, m in zip(item.ids, item.maskable, strict=True) if m and t != den.eos_id]
    structure = [t for t, m in zip(item.ids[prompt_len:], item.maskable[prompt_len:], strict=True) if not m]
    assert den.decode(slots) == "ab3"
    assert den.decode(structure) == '{"c": "", "n": }'


def test_corrupt_masks_maskable_tokens_only_at_ratio_t() -> None:
    ids = torch.arange(1, 41).reshape(2, 20)
    maskable = torch.zeros(2, 20, dtype=torch.bool)
    maskable[:, 5:] = True
    batch = Batch(ids, torch.ones_like(maskable), maskable, ~maskable)
    noisy, masked = corrupt(batch, 0, torch.tensor([1.0, 1e-9]), torch.Generator().manual_seed(0))
    assert masked[0].tolist() == maskable[0].tolist()  # t = 1: every response token
    assert not masked[1].any()  # t ~ 0: none
    assert (noisy[masked] == 0).all() and (noisy[~masked] == ids[~masked]).all()


def test_training_attention_is_the_samplers_prefix_lm() -> None:
    dm = DiffusionModel(tiny_random_denoiser(), SMALL)
    item = TrainItem([5, 6, 7, 8, 9, 10, 11], [False] * 3 + [True] * 4, 3)
    batch = Batch.of([item], 0)
    changed = batch.ids.clone()
    changed[0, 6] = 40  # the record's last token
    everywhere = torch.ones_like(batch.attention)
    with torch.no_grad():
        a = dm.logits(batch.ids, batch.attention, batch.prompt, everywhere)
        b = dm.logits(changed, batch.attention, batch.prompt, everywhere)
    # Shifted head: row i is the hidden state at i-1. Rows 1..3 come from the prompt, which does
    # not see the record; rows 4..6 come from record positions, which see all of it.
    assert torch.equal(a[:4], b[:4])
    assert (a[4:6] - b[4:6]).abs().amax() > 0


def test_sft_loss_weights_masked_tokens_by_one_over_t_and_response_length() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    targets = torch.tensor([0, 2, 2])
    rows = torch.tensor([0, 0, 1])
    t, lengths = torch.tensor([0.5, 0.25]), torch.tensor([4.0, 2.0])

    def ce(row: list[float], k: int) -> float:
        return -row[k] + math.log(sum(math.exp(v) for v in row))

    expected = (
        ce([2, 0, 0], 0) / (0.5 * 4) + ce([0, 1, 0], 2) / (0.5 * 4) + ce([0, 0, 3], 2) / (0.25 * 2)
    ) / 2
    assert float(sft_loss(logits, targets, rows, t, lengths)) == pytest.approx(expected, rel=1e-6)


def test_model_logits_ignore_unmasked_prompt_targets() -> None:
    den = tiny_random_denoiser()
    dm = DiffusionModel(den, SMALL)
    item = free_item(den, Example("Give a pair.", {"c": "ab", "n": 3}, SCHEMA), padding=1)
    batch = Batch.of([item], den.eos_id)
    loss, masked = dm.loss(batch, torch.tensor([1.0]), torch.Generator().manual_seed(0))
    assert masked == sum(item.maskable)
    # At t = 1 the loss is the mean CE over the response; recompute it from the logits.
    noisy = torch.where(batch.maskable, torch.full_like(batch.ids, den.mask_id), batch.ids)
    with torch.no_grad():
        logits = dm.logits(noisy, batch.attention, batch.prompt, batch.maskable)
    want = F.cross_entropy(logits, batch.ids[batch.maskable])
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)


def test_training_steps_reduce_the_heldout_loss(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    result = adapt(
        corpus, tmp_path / "run", 10, denoiser=tiny_random_denoiser(hidden=64), adapter_config=SMALL,
        train_config=FAST, max_steps=25, echo=lambda _: None,
    )  # fmt: skip
    assert result.steps == 25
    assert result.heldout_ce_initial is not None and result.heldout_ce is not None
    # The tiny model's frozen random head bounds its logits (near-uniform over 257 bytes: 5.5
    # nats), so a few tenths of a nat is what 25 steps can show.
    assert result.heldout_ce < result.heldout_ce_initial - 0.2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == list(range(1, 26))


def test_resume_continues_from_the_saved_step(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    said: list[str] = []

    def run(steps: int) -> dict:
        adapt(
            corpus, tmp_path / "run", 1000, denoiser=tiny_random_denoiser(), adapter_config=SMALL,
            train_config=FAST, max_steps=steps, echo=said.append,
        )  # fmt: skip
        return torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)

    saved = run(3)
    again = run(3)  # resumes at step 3 with nothing left to do: the saved adapter, untouched
    assert any("resumed" in line and "at step 3" in line for line in said)
    for name, value in saved["params"].items():
        assert torch.equal(again["params"][name], value)
    final = run(6)
    assert final["step"] == 6
    adam_steps = {float(s["step"]) for s in final["optimizer"]["state"].values()}
    assert adam_steps == {6.0}  # the optimizer's moments came back with the adapter
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4, 5, 6]


def test_resumed_data_order_is_the_uninterrupted_one() -> None:
    den = tiny_random_denoiser()
    examples = [Example("Give a pair.", {"c": c, "n": n}, SCHEMA) for c in ("ab", "cd") for n in range(9)]
    cfg = TrainConfig(batch_size=2)
    straight = training_batches(den, examples, cfg, 0)
    for _ in range(19):  # past the first pool of batches
        next(straight)
    resumed = training_batches(den, examples, cfg, 19)
    for _ in range(3):
        a, b = next(straight), next(resumed)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.maskable, b.maskable)


def test_resume_refuses_another_adapter_shape(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    kwargs = {
        "denoiser": tiny_random_denoiser(),
        "train_config": FAST,
        "max_steps": 1,
        "echo": lambda _: None,
    }
    adapt(corpus, tmp_path / "run", 10, adapter_config=SMALL, **kwargs)  # type: ignore[arg-type]
    kwargs["denoiser"] = tiny_random_denoiser()
    with pytest.raises(ModelError, match="another --out folder"):
        adapt(corpus, tmp_path / "run", 10, adapter_config=AdapterConfig(rank=2, first_layer=0), **kwargs)  # type: ignore[arg-type]


def test_apply_adapter_reproduces_the_trained_model_as_the_sampler_runs_it(tmp_path: Path) -> None:
    trained = tiny_random_denoiser()
    dm = DiffusionModel(trained, SMALL)
    with torch.no_grad():  # a trained-looking adapter: random factors and mask row
        for p in dm.trainable().values():
            p.copy_(torch.randn_like(p) * 0.3)
    save_adapter(dm, tmp_path, {})
    fresh = tiny_random_denoiser()
    prompt_ids, record = [5, 6, 7, 8], [fresh.mask_id, 9, fresh.mask_id, 10, fresh.eos_id]
    item = TrainItem(prompt_ids + record, [False] * 4 + [True] * 5, 4)
    batch = Batch.of([item], fresh.eos_id)
    ids, attention = torch.tensor([record]), torch.ones((1, 5), dtype=torch.bool)
    where = torch.ones_like(attention)
    before = fresh.logits(ids, attention, where, fresh.encode_prompt(prompt_ids))
    apply_adapter(fresh.model, tmp_path)
    # The sampler's path: the prompt encoded once (prefix-LM), the record's tokens after it.
    after = fresh.logits(ids, attention, where, fresh.encode_prompt(prompt_ids))
    with torch.no_grad():
        want = dm.logits(batch.ids, batch.attention, batch.prompt, batch.maskable)
    assert (after - before).abs().max() > 0.5  # the adapter changes the model...
    torch.testing.assert_close(after, want, atol=0.05, rtol=0.02)  # ...into the trained one (bf16 storage)


def test_apply_adapter_refuses_another_base(tmp_path: Path) -> None:
    dm = DiffusionModel(tiny_random_denoiser(), SMALL)
    save_adapter(dm, tmp_path, {})
    other = tiny_random_denoiser(hidden=64)
    with pytest.raises(ModelError, match="hidden_size=32"):
        apply_adapter(other.model, tmp_path)
    with pytest.raises(ModelError, match="lacks"):
        apply_adapter(other.model, tmp_path / "missing")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"train.jsonl:2: not JSON"),
        ('["a list"]', r"train.jsonl:2: expected a JSON object"),
        ('{"record": {"a": 1}}', r"train.jsonl:2: 'instruction' must be a non-empty string"),
        ('{"instruction": "x", "record": "text"}', r"train.jsonl:2: 'record' must be a JSON object or array"),
        ('{"instruction": "x", "record": {}, "schema": 3}', r"train.jsonl:2: 'schema' must be a JSON Schema"),
    ],
)
def test_corpus_format_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = json.dumps({"instruction": "x", "record": {"a": 1}})
    (tmp_path / "train.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        read_corpus(tmp_path)


def test_corpus_folder_must_exist_and_hold_train_jsonl(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"train.jsonl does not exist"):
        read_corpus(tmp_path)
    (tmp_path / "train.jsonl").write_text(json.dumps({"instruction": "x", "record": {"a": 1}}) + "\n")
    train, heldout = read_corpus(tmp_path)
    assert train == [Example("x", {"a": 1})] and heldout == []
