"""DiffusionGemma through transformers' own ``DiffusionGemmaForBlockDiffusion``.

A tiny randomly initialised configuration (two layers, one of them sliding-window, a mixture of
two experts, a one-layer vision tower) is saved to a folder with a byte-level tokenizer and loaded
as any model folder is. Skeleton infilling is valid and reproducible; the canvas keeps the
skeleton's tokens and noises the undecided ones; self-conditioning reaches the decoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from aod_ops.cli import main
from aod_ops.dlm.denoiser import RecordCache
from aod_ops.dlm.diffusion_gemma import DiffusionGemmaDenoiser, tiny_config
from aod_ops.dlm.generate import DecodingSettings, Generator
from aod_ops.dlm.models import _byte_tokenizer, load_denoiser
from aod_ops.dlm.prompting import render_prompt
from aod_ops.dlm.sampler import denoise
from aod_ops.dlm.settings import SamplerSettings
from aod_ops.schema import load_schema

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "schemas"
FAST = DecodingSettings(steps=4, temperature=1.0)
SLIDING_WINDOW = 8  # shorter than the prompts: the sliding layer's cache keeps only its window


def write_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny random DiffusionGemma saved with the byte-level tokenizer."""
    from transformers import DiffusionGemmaForBlockDiffusion

    tokenizer = _byte_tokenizer()
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "layer_types": ["sliding_attention", "full_attention"],
        "sliding_window": SLIDING_WINDOW,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "global_head_dim": 16,
        "num_experts": 2,
        "top_k_experts": 1,
        "moe_intermediate_size": 16,
        "max_position_embeddings": 4096,
    }
    config = tiny_config(tokenizer, text, canvas_length=64)
    torch.manual_seed(seed)
    DiffusionGemmaForBlockDiffusion(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("models") / "tiny-diffusion-gemma")


@pytest.fixture(scope="module")
def den(folder: Path) -> DiffusionGemmaDenoiser:
    loaded = load_denoiser(str(folder))  # transformers' own class: no remote code to trust
    assert isinstance(loaded, DiffusionGemmaDenoiser)
    return loaded


@contextmanager
def decoder_calls(den: DiffusionGemmaDenoiser) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every call of DiffusionGemmaModel inside the block."""
    seen: list[dict[str, Any]] = []

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs)

    handle = den.model.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_a_diffusion_gemma_folder_loads_as_its_own_class(den: DiffusionGemmaDenoiser) -> None:
    assert type(den.model).__name__ == "DiffusionGemmaForBlockDiffusion"
    assert den.shift is False  # the decoder predicts each canvas position in place
    assert den.mask_id == den.tokenizer.mask_token_id and den.eos_id == den.tokenizer.eos_token_id
    assert den.vocab_size == den.noise_vocab == len(den.tokenizer)
    assert den.context == 4096


@pytest.mark.parametrize("name", ["cars.json", "la-riots.json"])
def test_skeleton_infilling_is_valid_and_reproducible(
    folder: Path, den: DiffusionGemmaDenoiser, name: str
) -> None:
    schema = load_schema(EXAMPLES / name)
    prompt = render_prompt("Write a record.")
    seeds = [1, 2, 3, 4, 5, 6]
    generator = Generator(den, schema)
    candidates = generator.generate(prompt, seeds, FAST)
    assert [c.errors for c in candidates] == [()] * len(seeds)  # validity 1.0
    assert all(json.loads(c.text) == c.record for c in candidates)
    assert generator.stats.forwards > 0
    assert len({c.text for c in candidates}) > 1  # the seeds draw different records
    # The same seeds give the same records, in another batch and from a fresh load of the folder.
    again = Generator(load_denoiser(str(folder)), schema).generate(prompt, seeds[::-1], FAST)
    assert [c.text for c in again[::-1]] == [c.text for c in candidates]


def test_free_mode_runs_the_whole_response_through_the_decoder(den: DiffusionGemmaDenoiser) -> None:
    schema = load_schema(EXAMPLES / "cars.json")
    settings = DecodingSettings(mode="free", steps=4, block_length=16, max_new_tokens=32)
    prompt = render_prompt("Write a record.", schema.contents)
    generator = Generator(den, schema)
    with decoder_calls(den) as calls:
        candidates = generator.generate(prompt, [5, 6], settings)
    assert len(candidates) == 2 and generator.stats.forwards == len(calls) + 1  # the encoder's pass
    assert all(call["decoder_input_ids"].shape == (2, 32) for call in calls)
    for c in candidates:  # random weights write bytes, not JSON: a candidate, never a crash
        assert not c.valid and c.errors[0].startswith("parse error")


def test_the_canvas_keeps_the_skeleton_and_noises_the_undecided_positions(
    den: DiffusionGemmaDenoiser,
) -> None:
    mask = den.mask_id
    row = den.encode('{"name": "') + [mask] * 6 + den.encode('"}')
    other = den.encode('{"id": ') + [mask] * 3 + den.encode("}")
    ids = torch.tensor([row, other + [den.eos_id] * (len(row) - len(other))])
    attention = torch.ones_like(ids, dtype=torch.bool)
    attention[1, len(other) :] = False
    canvas = den.canvas(ids, attention)
    undecided = ids == mask
    assert torch.equal(canvas[~undecided], ids[~undecided])  # literal and padding tokens stay
    assert (canvas[undecided] < den.noise_vocab).all() and not (canvas[undecided] == mask).all()
    # A record's noise is its own: alone, or beside another record, it is the same.
    one = torch.tensor([other])
    assert torch.equal(den.canvas(one, torch.ones_like(one, dtype=torch.bool))[0], canvas[1, : len(other)])
    assert torch.equal(den.canvas(ids, attention), canvas)  # the same tokens, the same draw
    # Records that differ draw different noise, even at the same undecided positions.
    twin = torch.tensor([row, den.encode('{"nick": "') + [mask] * 6 + den.encode('"}')])
    drawn = den.canvas(twin, torch.ones_like(twin, dtype=torch.bool))
    assert not torch.equal(drawn[0, twin[0] == mask], drawn[1, twin[1] == mask])


def test_self_conditioning_feeds_each_pass_the_last_ones_logits(den: DiffusionGemmaDenoiser) -> None:
    prompt = den.encode_prompt(den.encode("Write a record."))
    ids = torch.tensor([den.encode('{"a": "') + [den.mask_id] * 8 + den.encode('"}')] * 2)
    attention = torch.ones_like(ids, dtype=torch.bool)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    for cache in (True, False):
        settings = SamplerSettings(steps=4, block_length=8, cache=cache)
        with decoder_calls(den) as calls:
            out = denoise(den, prompt, ids, attention, settings, generators)
        assert not (out == den.mask_id).any() and len(calls) >= 2
        signal = [call["self_conditioning_logits"] for call in calls]
        assert signal[0] is None
        if cache:  # within one denoising run, the sampler's RecordCache carries the logits
            assert all(s is not None and s.shape == (*ids.shape, den.vocab_size) for s in signal[1:])
        else:
            assert all(s is None for s in signal)
    record = RecordCache()
    den.logits(ids, attention, ids == den.mask_id, prompt, record)
    assert record.self_conditioning is not None and record.layers is None  # never a window pass


def test_a_record_beside_a_longer_one_gets_its_logits_alone(den: DiffusionGemmaDenoiser) -> None:
    prompt = den.encode_prompt(den.encode("Write a record, a longer prompt than the window."))
    assert len(prompt.ids) > SLIDING_WINDOW
    short = den.encode('{"a": ') + [den.mask_id] * 3
    long = den.encode('{"a longer key": "') + [den.mask_id] * 9
    one = torch.tensor([short])
    alone = den.logits(one, torch.ones_like(one, dtype=torch.bool), one == den.mask_id, prompt)
    ids = torch.tensor([short + [den.eos_id] * (len(long) - len(short)), long])
    attention = torch.ones_like(ids, dtype=torch.bool)
    attention[0, len(short) :] = False
    where = (ids == den.mask_id) & (torch.arange(2)[:, None] == 0)
    assert torch.allclose(den.logits(ids, attention, where, prompt), alone, atol=1e-4)


def test_generate_writes_valid_records_from_the_command_line(folder: Path, tmp_path: Path) -> None:
    schema = EXAMPLES / "cars.json"
    out = tmp_path / "records.jsonl"
    args = ["generate", "--schema", str(schema), "-n", "4", "--steps", "4", "--seed", "3"]
    assert main([*args, "--model", str(folder), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    loaded = load_schema(schema)
    assert len(records) == 4 and all(not list(loaded.errors(r)) for r in records)
