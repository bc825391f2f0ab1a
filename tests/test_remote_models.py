"""LLaDA, LLaDA2 and Dream from a local folder that ships its own modelling code.

Each folder is written here: a family's code from ``tests/fixtures/remote_models`` (tiny
stand-ins with the real interface), a ``config.json`` whose ``auto_map`` names it, random weights
and a byte-level tokenizer. Every family runs full passes with the attention mask its code takes,
and writes valid records through the real sampler and from the command line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from aod_ops.cli import main
from aod_ops.dlm.denoiser import Denoiser, FullPass, RecordCache
from aod_ops.dlm.generate import DecodingSettings, Generator
from aod_ops.dlm.models import _byte_tokenizer, load_denoiser
from aod_ops.dlm.prompting import render_prompt
from aod_ops.schema import load_schema

CODE = Path(__file__).parent / "fixtures" / "remote_models"
CARS = Path(__file__).resolve().parents[1] / "examples" / "schemas" / "cars.json"
FAST = DecodingSettings(steps=4, temperature=1.0)


@dataclass(frozen=True)
class Family:
    """A family's folder: its code, what its config.json says, and how aod must run it."""

    code: str
    model_type: str
    architecture: str
    auto_map: dict[str, str]
    mask: str
    shift: bool


FAMILIES = {
    "llada": Family(
        "llada",
        "llada",
        "LLaDAModelLM",
        {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        },
        "padding",
        False,
    ),
    "llada2": Family(
        "llada2",
        "llada2_moe",
        "LLaDA2MoeModelLM",
        {
            "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
            "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",  # the body: the loader must not take it
            "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM",
        },
        "blocks",
        False,
    ),
    "dream": Family(
        "dream",
        "Dream",
        "DreamModel",
        {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "square",
        True,
    ),
}


def write_folder(family: Family, folder: Path) -> Path:
    """A model folder of ``family``: its code, config.json with the auto_map, random weights."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    folder.mkdir()
    for source in (CODE / family.code).glob("*.py"):
        shutil.copy(source, folder)
    config = {"model_type": family.model_type, "architectures": [family.architecture]}
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": family.auto_map}))
    loaded = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    auto = AutoModelForCausalLM if "AutoModelForCausalLM" in family.auto_map else AutoModel
    torch.manual_seed(0)
    auto.from_config(loaded, trust_remote_code=True).save_pretrained(folder)
    _byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("remote")
    return {name: write_folder(family, root / f"tiny-{name}") for name, family in FAMILIES.items()}


@pytest.fixture(scope="module")
def denoisers(folders: dict[str, Path]) -> dict[str, Denoiser]:
    return {name: load_denoiser(str(path), trust_remote_code=True) for name, path in folders.items()}


@contextmanager
def forward_calls(den: Denoiser) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every call of the model's forward inside the block."""
    seen: list[dict[str, Any]] = []

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs)

    handle = den.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def own_sampler_mask(name: str, total: int, dtype: torch.dtype) -> dict[str, Any]:
    """The attention arguments each family's own sampler passes for one unpadded sequence."""
    if name != "llada2":
        return {}  # LLaDA: no mask; Dream: "full" (no mask)
    # LLaDA2's generate: block-causal over blocks of 32, ones and zeros in the model's dtype.
    blocks = -(-total // 32)
    mask = torch.tril(torch.ones(blocks, blocks)).repeat_interleave(32, 0).repeat_interleave(32, 1)
    mask = mask[:total, :total][None, None].to(dtype)
    return {"attention_mask": mask, "position_ids": torch.arange(total)[None]}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_loads_with_its_head_and_runs_full_passes(
    denoisers: dict[str, Denoiser], name: str
) -> None:
    den, family = denoisers[name], FAMILIES[name]
    assert type(den.model).__name__ == family.architecture  # LLaDA2's AutoModel is its body
    assert hasattr(den.model, "model") and den.model.get_output_embeddings() is not None
    # It looks like a transformers body with a head, yet its code returns no cache: full passes.
    assert den.full_pass is not None and den.full_pass.mask == family.mask and den._body() is None
    assert den.shift is family.shift
    assert den.mask_id == 257 and den.eos_id == 256  # config.json's mask id, or the tokenizer's (LLaDA2)
    assert den.encode_prompt(den.encode("Write a record.")).layers is None


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_skeleton_infilling_writes_valid_records_for_each_family(
    denoisers: dict[str, Denoiser], name: str
) -> None:
    den = denoisers[name]
    schema = load_schema(CARS)
    generator = Generator(den, schema)
    with forward_calls(den) as calls:
        candidates = generator.generate(render_prompt("Write a record."), [1, 2, 3, 4], FAST)
    assert [c.errors for c in candidates] == [()] * 4
    assert all(c.valid and json.loads(c.text) == c.record for c in candidates)
    # One forward of the model's own code per pass, never asked for a cache.
    assert len(calls) == generator.stats.forwards > 0
    assert all(call["use_cache"] is False for call in calls)
    again = Generator(den, schema).generate(render_prompt("Write a record."), [1, 2, 3, 4], FAST)
    assert [c.text for c in again] == [c.text for c in candidates]  # the same seeds, the same records


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_gets_the_attention_mask_its_code_takes(
    denoisers: dict[str, Denoiser], name: str
) -> None:
    den = denoisers[name]
    prompt = den.encode_prompt(den.encode("Write."))
    n = len(prompt.ids)
    ids = torch.tensor(
        [den.encode('{"a": ') + [den.mask_id] * 3, den.encode('{"b": ') + [den.mask_id] * 2 + [den.eos_id]]
    )
    attention = torch.ones_like(ids, dtype=torch.bool)
    attention[1, -1] = False  # padding
    with forward_calls(den) as calls:
        den.logits(ids, attention, ids == den.mask_id, prompt, RecordCache())
    (call,) = calls
    mask, total = call["attention_mask"], n + ids.shape[1]
    if name == "llada":  # LLaDA's code reads a (batch, seq) 1/0 mask only
        assert mask.tolist() == [[1] * total, [1] * (total - 1) + [0]]
    elif name == "dream":  # Dream's code hands a [B, 1, N, N] bool mask to SDPA
        assert mask.dtype == torch.bool and mask.shape == (2, 1, total, total)
        assert mask[1, 0, :, -1].tolist() == [False] * total and mask[1, 0, :, :-1].all()
    else:  # LLaDA2: 1/0 in the model's dtype (one block here), with positions
        assert mask.dtype == den.model.dtype and mask.shape == (2, 1, total, total)
        assert mask[1, 0, :, -1].tolist() == [0.0] * total and mask[1, 0, :, :-1].eq(1).all()
        assert torch.equal(call["position_ids"][1], torch.arange(total))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_logits_are_the_models_own_at_the_familys_position(denoisers: dict[str, Denoiser], name: str) -> None:
    den = denoisers[name]
    prompt = den.encode_prompt(den.encode("Write a record."))
    n = len(prompt.ids)
    ids = torch.tensor([den.encode('{"name": "') + [den.mask_id] * 4 + den.encode('"}')])
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, [0, 11, 12]] = True
    got = den.logits(ids, torch.ones_like(ids, dtype=torch.bool), where, prompt)
    full = torch.cat([torch.tensor([prompt.ids]), ids], 1)
    with torch.no_grad():
        own = den.model(input_ids=full, **own_sampler_mask(name, full.shape[1], den.model.dtype))
    # LLaDA and LLaDA2 predict each position in place; Dream's logits at i-1 predict token i.
    at = [n + c - int(FAMILIES[name].shift) for c in (0, 11, 12)]
    assert torch.allclose(got, own.logits[0, at].float(), atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_padding_is_never_attended_to(denoisers: dict[str, Denoiser], name: str) -> None:
    den = denoisers[name]
    prompt = den.encode_prompt(den.encode("Write a record."))
    short = den.encode('{"a": ') + [den.mask_id] * 3
    long = den.encode('{"a longer key": "') + [den.mask_id] * 9
    one = torch.tensor([short])
    alone = den.logits(one, torch.ones_like(one, dtype=torch.bool), one == den.mask_id, prompt)
    ids = torch.tensor([short + [den.eos_id] * (len(long) - len(short)), long])
    attention = torch.ones_like(ids, dtype=torch.bool)
    attention[0, len(short) :] = False
    where = (ids == den.mask_id) & (torch.arange(2)[:, None] == 0)
    batched = den.logits(ids, attention, where, prompt)
    assert torch.allclose(batched, alone, atol=1e-4)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_per_position_sight_holds_where_the_familys_mask_can_say_it(
    denoisers: dict[str, Denoiser], name: str
) -> None:
    den = denoisers[name]
    prompt = den.encode_prompt(den.encode("Write."))
    ids = torch.tensor([den.encode('{"a": 1, "b": 2}')])
    sight = torch.ones((ids.shape[1], ids.shape[1]), dtype=torch.bool).tril()[None]  # causal
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, 3] = True
    later = ids.clone()
    later[0, 10] = den.encode("x")[0]
    base, moved = den.logits(ids, sight, where, prompt), den.logits(later, sight, where, prompt)
    if name == "llada":  # a 2D mask: every position sees what any position of its record may
        assert not torch.allclose(moved, base)
    else:  # Dream's and LLaDA2's 4D masks keep each position's own sight
        assert torch.allclose(moved, base, atol=1e-6)


def test_llada2_reads_the_record_block_causally(denoisers: dict[str, Denoiser]) -> None:
    den = denoisers["llada2"]
    block = FullPass("blocks").block
    prompt = den.encode_prompt([])  # an empty prompt: blocks start at the record's first token
    ids = torch.tensor([den.encode("x" * (3 * block))])
    attention = torch.ones_like(ids, dtype=torch.bool)
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, block + 2] = True  # a position of the second block
    base = den.logits(ids, attention, where, prompt)

    def changed(col: int) -> torch.Tensor:
        other = ids.clone()
        other[0, col] = den.encode("y")[0]
        return den.logits(other, attention, where, prompt)

    assert torch.equal(changed(2 * block + 1), base)  # a later block is not seen
    assert not torch.allclose(changed(2 * block - 1), base)  # the rest of its own block is
    assert not torch.allclose(changed(0), base)  # and the blocks before it


def test_generate_writes_valid_llada_records_only_with_trust(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "records.jsonl"
    args = ["generate", "--schema", str(CARS), "-n", "3", "--steps", "4", "--model", str(folders["llada"])]
    assert main([*args, "--out", str(out)]) == 2
    assert f"model folder {folders['llada']} ships its own Python code" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--trust-remote-code", "--out", str(out)]) == 0
    schema = load_schema(CARS)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(not list(schema.errors(r)) for r in records)
