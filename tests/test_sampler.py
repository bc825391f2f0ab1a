"""The masked-diffusion sampler and skeleton infilling, with a tiny random bidirectional model."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Literal

import pytest
import torch

from aod_ops.dlm.denoiser import Denoiser, PromptState, RecordCache
from aod_ops.dlm.infill import infill
from aod_ops.dlm.legal import fit_number, fit_string
from aod_ops.dlm.models import tiny_random_denoiser
from aod_ops.dlm.sampler import denoise
from aod_ops.dlm.settings import SamplerSettings
from aod_ops.dlm.skeleton import Slot, fill, layout_record, plan_ids, plan_records
from aod_ops.dlm.vocab import Vocab
from aod_ops.schema.nodes import (
    ArrayNode,
    ChoiceNode,
    NumberNode,
    ObjectNode,
    Property,
    StringNode,
    UnionNode,
)
from aod_ops.schema.patterns import full_match

ROOT = ObjectNode(
    (
        Property("name", StringNode(min_length=2, max_length=12), True),
        Property("age", NumberNode(integer=True, minimum=18, maximum=90), True),
        Property("price", NumberNode(minimum=0, maximum=10, exclusive_minimum=True, multiple_of=0.25), False),
        Property("color", ChoiceNode(("red", "green", "blue")), True),
        Property("code", StringNode(pattern=r"[A-Z]{3}-\d{4}"), True),
        Property(
            "tags", ArrayNode(items=ChoiceNode(("a", "b", "c")), min_items=1, max_items=3, unique=True), True
        ),
        Property(
            "either", UnionNode((ChoiceNode((None,)), NumberNode(integer=True, minimum=5, maximum=6))), True
        ),
    )
)


@pytest.fixture(scope="module")
def den() -> Denoiser:
    return tiny_random_denoiser()


def plan_and_fill(
    den: Denoiser,
    seeds: list[int],
    steps: int = 6,
    temperature: float = 1.0,
    cache: bool = True,
    root: ObjectNode = ROOT,
    order: Literal["confidence", "left_to_right"] = "confidence",
) -> list[tuple[list, dict]]:
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    vocab = Vocab(den)
    prompt = den.encode_prompt(den.encode("Write a record.\nRecord:\n"))
    planned = plan_records(vocab, prompt, root, temperature, gens)
    infill(
        vocab,
        prompt,
        [p for p, _ in planned],
        SamplerSettings(steps=steps, cache=cache, order=order),
        gens,
        [random.Random(s) for s in seeds],
    )
    return [(plan, fill(v)) for plan, v in planned]


def run(
    den: Denoiser,
    seeds: list[int],
    steps: int = 6,
    temperature: float = 1.0,
    cache: bool = True,
    root: ObjectNode = ROOT,
    order: Literal["confidence", "left_to_right"] = "confidence",
) -> list[dict]:
    return [record for _, record in plan_and_fill(den, seeds, steps, temperature, cache, root, order)]


def test_same_seed_gives_the_same_records(den: Denoiser) -> None:
    assert run(den, [1, 2, 3]) == run(den, [1, 2, 3])
    assert run(den, [1, 2, 3]) != run(den, [4, 5, 6])


@pytest.mark.parametrize(
    ("cache", "order"), [(True, "confidence"), (False, "confidence"), (True, "left_to_right")]
)
def test_a_records_draws_do_not_depend_on_its_batch(
    den: Denoiser, cache: bool, order: Literal["confidence", "left_to_right"]
) -> None:
    # Records of one layout share the batch's blocks; the dual cache's windows differ per record
    # (each commits its own tokens), and a record must see only its own fresh columns.
    fixed = ObjectNode(tuple(p for p in ROOT.properties if p.name in ("name", "age", "color", "code")))
    seeds = list(range(10, 16))
    together = run(den, seeds, cache=cache, root=fixed, order=order)
    assert len({json.dumps(r, sort_keys=True) for r in together}) == len(seeds)
    assert [run(den, [s], cache=cache, root=fixed, order=order)[0] for s in seeds] == together
    assert run(den, seeds[3:], cache=cache, root=fixed, order=order) == together[3:]


def test_bounded_numbers_need_no_repair_and_a_random_model_needs_the_pattern_completed(den: Denoiser) -> None:
    repaired: dict[str, list[bool]] = {}
    for plan, _ in plan_and_fill(den, list(range(16))):
        for piece in plan:
            if isinstance(piece, Slot):
                repaired.setdefault(piece.pointer, []).append(piece.repaired)
    for pointer in ("/age", "/price", "/either"):  # bounded numbers are decoded legally
        assert not any(repaired.get(pointer, [])), pointer
    assert any(repaired["/code"])  # random bytes rarely rank a legal character in their top 64


def test_choices_and_slots_are_always_legal(den: Denoiser) -> None:
    for record in run(den, list(range(24))):
        assert record["color"] in {"red", "green", "blue"}
        assert 18 <= record["age"] <= 90 and isinstance(record["age"], int)
        assert 2 <= len(record["name"]) <= 12
        assert full_match(r"[A-Z]{3}-\d{4}", record["code"])
        assert 1 <= len(record["tags"]) <= 3 and len(set(record["tags"])) == len(record["tags"])
        assert record["either"] is None or record["either"] in (5, 6)
        if "price" in record:
            assert 0 < record["price"] <= 10 and (record["price"] / 0.25).is_integer()


def test_optional_properties_and_branches_vary_across_records(den: Denoiser) -> None:
    records = run(den, list(range(24)))
    assert {("price" in r) for r in records} == {True, False}
    assert {r["either"] is None for r in records} == {True, False}


def test_left_to_right_commits_the_leftmost_mask_of_each_run_and_ends_it_at_end_of_text(
    den: Denoiser, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = den.encode_prompt(den.encode("hello "))
    ids = torch.full((3, 16), den.mask_id)
    ids[:, [0, 7]] = 7  # literal text around two runs: 1-6 and 8-15
    sequential = torch.zeros_like(ids, dtype=torch.bool)
    sequential[:, 1:7] = sequential[:, 8:16] = True
    states: list[torch.Tensor] = []
    logits = den.logits

    def spy(*args: object) -> torch.Tensor:
        states.append(args[0].clone())  # type: ignore[attr-defined]
        out = logits(*args)  # type: ignore[arg-type]
        out[:, den.eos_id] += 3.0  # the model likes to end a value early
        return out

    monkeypatch.setattr(den, "logits", spy)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    settings = SamplerSettings(steps=2, block_length=32, order="left_to_right")
    out = denoise(den, prompt, ids, torch.ones_like(sequential), settings, gens, sequential=sequential)
    assert not (out == den.mask_id).any()
    for state in [*states, out]:
        for b in range(3):
            for lo, hi in ((1, 7), (8, 16)):
                masked = (state[b, lo:hi] == den.mask_id).tolist()
                assert masked == sorted(masked)  # committed text is always a prefix of the run
                tokens = state[b, lo:hi].tolist()
                if den.eos_id in tokens:  # an end of text ends the run
                    assert set(tokens[tokens.index(den.eos_id) :]) == {den.eos_id}
    # Two steps were asked for; six positions one at a time need more, and get them.
    assert len(states) > 2


def test_a_hooked_slot_gets_per_step_positions_a_pass_and_a_sequential_one_its_leftmost(
    den: Denoiser,
) -> None:
    prompt = den.encode_prompt(den.encode("hello "))
    ids = torch.full((1, 13), den.mask_id)
    ids[:, 6] = 7  # literal text between a number-like slot (0-5) and a text slot (7-12)
    owned = torch.ones_like(ids, dtype=torch.bool)
    owned[:, 6] = False
    sequential = torch.zeros_like(owned)
    sequential[:, 7:] = True
    given: list[list[int]] = []

    def hook(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, ids: torch.Tensor) -> None:
        given.append(cols.tolist())
        ids[rows, cols] = 5

    settings = SamplerSettings(steps=16, block_length=48)  # per_step 3
    gens = [torch.Generator().manual_seed(0)]
    out = denoise(
        den, prompt, ids, torch.ones_like(owned), settings, gens, ordered=(owned, hook), sequential=sequential
    )
    assert not (out == den.mask_id).any()
    assert given[:2] == [[0, 1, 2, 7], [3, 4, 5, 8]]
    assert given[2:] == [[9], [10], [11], [12]]


def test_denoise_leaves_no_mask_and_counts_forward_passes(den: Denoiser) -> None:
    prompt = den.encode_prompt(den.encode("hello "))
    ids = torch.full((3, 20), den.mask_id)
    before = den.forwards
    out = denoise(
        den,
        prompt,
        ids,
        torch.ones_like(ids, dtype=torch.bool),
        SamplerSettings(steps=8, block_length=8),
        [torch.Generator().manual_seed(i) for i in range(3)],
    )
    assert not (out == den.mask_id).any()
    assert den.forwards - before == 6  # 20 masks = 3 blocks of 8, each gets 8 // 3 = 2 steps
    # greedy decoding is deterministic whatever the seeds
    greedy = SamplerSettings(steps=4, block_length=32, temperature=0)
    mask = torch.ones_like(ids, dtype=torch.bool)
    a = denoise(den, prompt, ids, mask, greedy, [torch.Generator().manual_seed(i) for i in range(3)])
    b = denoise(den, prompt, ids, mask, greedy, [torch.Generator().manual_seed(i + 9) for i in range(3)])
    assert torch.equal(a, b)


def test_the_cached_prompt_gives_the_logits_of_the_prepended_prompt(den: Denoiser) -> None:
    prompt_ids = den.encode("Write a record about cars.")
    cached = den.encode_prompt(prompt_ids)
    assert cached.layers is not None and cached.last_hidden is not None
    plain = PromptState(tuple(prompt_ids))  # no keys and values: the prompt is prepended
    ids = torch.tensor([den.encode('{"a": ') + [den.mask_id] * 6, den.encode('{"bb": 1') + [den.mask_id] * 4])
    attention = torch.ones_like(ids, dtype=torch.bool)
    attention[1, -1] = False  # padding
    where = ids == den.mask_id
    where[0, 0] = True  # the first token after the prompt is scored from the prompt's last state
    a = den.logits(ids, attention, where, cached)
    b = den.logits(ids, attention, where, plain)
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("shift", [True, False])
def test_a_window_pass_on_a_fresh_cache_gives_the_full_pass_logits(den: Denoiser, shift: bool) -> None:
    model = replace(den, shift=shift)  # shifted heads read column c at c-1, which must run too
    prompt = model.encode_prompt(model.encode("Write a record about cars."))
    ids = torch.tensor(
        [model.encode('{"a": ') + [model.mask_id] * 9, model.encode('{"bb": 1') + [model.mask_id] * 7]
    )
    attention = torch.ones_like(ids, dtype=torch.bool)
    attention[1, -2:] = False  # padding
    window = torch.zeros_like(attention)
    window[:, [0, 4, 5, 6, 11]] = True
    window[1, 2] = True  # each record has its own window
    where = window.clone()
    cache = RecordCache()
    full = model.logits(ids, attention, where, prompt, cache)  # a full pass fills the cache
    assert cache.layers is not None and cache.layers[0][0].shape[2] == len(prompt.ids) + ids.shape[1]
    cache.window = window
    before = model.forwards
    windowed = model.logits(ids, attention, where, prompt, cache)
    assert model.forwards == before + 1
    assert torch.allclose(windowed, full, atol=1e-4)


def test_a_window_pass_writes_back_its_own_records_columns_only(den: Denoiser) -> None:
    prompt = den.encode_prompt(den.encode("hello "))
    ids = torch.full((2, 8), den.mask_id)
    attention = torch.ones_like(ids, dtype=torch.bool)
    cache = RecordCache()
    den.logits(ids, attention, ids == den.mask_id, prompt, cache)
    assert cache.layers is not None
    before = [(k.clone(), v.clone()) for k, v in cache.layers]
    changed = ids.clone()
    changed[:, 5] = 7  # both records commit column 5; only record 0 recomputes it
    cache.window = torch.zeros_like(attention)
    cache.window[0, 5] = True
    den.logits(changed, attention, cache.window, prompt, cache)
    exact = RecordCache()
    den.logits(changed, attention, changed == den.mask_id, prompt, exact)
    assert exact.layers is not None
    n = len(prompt.ids)
    # A first layer's keys and values depend on the token and its position alone: the written
    # column is exact; every other entry is what the full pass left.
    for (k, v), (k0, v0), (ke, ve) in zip(cache.layers[:1], before[:1], exact.layers[:1], strict=True):
        assert torch.allclose(k[0, :, n + 5], ke[0, :, n + 5], atol=1e-5)
        assert torch.allclose(v[0, :, n + 5], ve[0, :, n + 5], atol=1e-5)
        assert not torch.allclose(k[0, :, n + 5], k0[0, :, n + 5])
        untouched = torch.ones(k.shape[2], dtype=torch.bool)
        untouched[n + 5] = False
        assert torch.equal(k[0, :, untouched], k0[0, :, untouched])
        assert torch.equal(k[1], k0[1]) and torch.equal(v[1], v0[1])


def test_the_dual_cache_computes_literal_text_once_and_refreshes_masks_per_block(
    den: Denoiser, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = den.encode_prompt(den.encode("hello "))
    ids = torch.full((3, 27), den.mask_id)
    ids[:, [3, 12, 21]] = 7  # a skeleton's literal text
    attention = torch.ones_like(ids, dtype=torch.bool)
    seen: list[tuple[list[list[int]] | None, torch.Tensor]] = []
    logits = den.logits

    def spy(*args: object) -> torch.Tensor:
        cache = args[-1]
        window = None if cache is None or cache.window is None else _columns(cache.window)  # type: ignore[attr-defined]
        seen.append((window, args[0].clone()))  # type: ignore[attr-defined]
        return logits(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(den, "logits", spy)
    for cache in (True, False):
        gens = [torch.Generator().manual_seed(i) for i in range(3)]
        settings = SamplerSettings(steps=8, block_length=8, cache=cache)
        out = denoise(den, prompt, ids, attention, settings, gens)
        assert not (out == den.mask_id).any()
    cached, full = seen[:6], seen[6:]
    assert [w for w, _ in full] == [None] * 6 and cached[0][0] is None  # the first pass is full
    # 3 blocks of 8 masks (the literal text between them belongs to none), 2 steps each. A pass
    # recomputes its block's masks and what the pass before committed; a block's first step also
    # every mask; literal text never again.
    columns = [c for c in range(27) if c not in (3, 12, 21)]
    for p in range(1, 6):
        window, now = cached[p]
        block = columns[8 * (p // 2) : 8 * (p // 2) + 8]
        for b in range(3):
            masks = {c for c in range(27) if now[b, c] == den.mask_id}
            changed = set((now[b] != cached[p - 1][1][b]).nonzero()[:, 0].tolist())
            expected = changed | (masks & set(block)) | (masks if p % 2 == 0 else set())
            assert window is not None and set(window[b]) == expected
            assert not {3, 12, 21} & set(window[b])


def _columns(window: torch.Tensor) -> list[list[int]]:
    """Each record's window as its column indices."""
    return [row.nonzero()[:, 0].tolist() for row in window]


def test_a_window_holds_the_hooks_next_position_and_what_changed_since_the_pass_before(
    den: Denoiser, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = den.encode_prompt(den.encode("hello "))
    ids = torch.full((2, 12), den.mask_id)
    owned = torch.zeros_like(ids, dtype=torch.bool)
    owned[:, 8:] = True  # a span the hook fills left to right, per_step (2) tokens a pass

    def hook(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, ids: torch.Tensor) -> None:
        for b in range(ids.shape[0]):
            if not (ids[b, 8:] == den.mask_id).any():
                assert not ((rows == b) & (cols >= 8)).any()
                continue
            left = int((ids[b, 8:] == den.mask_id).nonzero()[0]) + 8
            for col in (left, left + 1):
                assert ((rows == b) & (cols == col)).any()  # its logits were computed
            assert not ((rows == b) & (cols > left + 1)).any()  # and not the rest of its span
            ids[b, left : left + 2] = 5

    seen: list[tuple[list[list[int]] | None, torch.Tensor]] = []
    logits = den.logits

    def spy(*args: object) -> torch.Tensor:
        cache = args[-1]
        seen.append((None if cache.window is None else _columns(cache.window), args[0].clone()))  # type: ignore[attr-defined]
        return logits(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(den, "logits", spy)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = denoise(
        den,
        prompt,
        ids,
        torch.ones_like(owned),
        SamplerSettings(steps=4, block_length=8),
        gens,
        ordered=(owned, hook),
    )
    assert not (out == den.mask_id).any()
    assert [w is None for w, _ in seen] == [True, False, False, False]  # one block of 4 steps
    for (windows_then, ids_then), (_, ids_before) in zip(seen[1:], seen, strict=False):
        assert windows_then is not None
        for b, window in enumerate(windows_then):  # each record's own changes, not its neighbour's
            changed = set((ids_then[b] != ids_before[b]).nonzero()[:, 0].tolist())
            masks = {c for c in range(8) if ids_then[b, c] == den.mask_id}
            hook_next = 8 + int((ids_then[b, 8:] != den.mask_id).sum())
            assert set(window) == masks | changed | ({hook_next, hook_next + 1} & set(range(12)))


def test_fit_number_folds_into_bounds_and_multiples_and_says_when_it_repaired() -> None:
    rng = random.Random(0)
    node = NumberNode(integer=True, minimum=10, maximum=20)
    assert fit_number("15", node, rng) == ("15", False)
    folded, repaired = fit_number("99", node, rng)
    assert 10 <= int(folded) <= 20 and repaired
    invented, repaired = fit_number("", node, rng)
    assert 10 <= int(invented) <= 20 and repaired
    odd = NumberNode(minimum=0, maximum=1, multiple_of=0.1)
    value = json.loads(fit_number("0.73", odd, rng)[0])
    assert 0 <= value <= 1 and int(value / 0.1) == value / 0.1
    exclusive = NumberNode(integer=True, minimum=0, maximum=1, exclusive_minimum=True)
    assert fit_number("0", exclusive, rng) == ("1", True)
    assert fit_number("015", node, rng) == ("15", True)  # not JSON: a leading zero
    assert fit_number("12.50", NumberNode(minimum=0, maximum=20), rng) == ("12.50", False)


def test_fit_number_never_moves_a_value_already_in_range() -> None:
    # The fold lo + (v - lo) % (hi - lo) sent the maximum to the minimum (Year 1982 -> 1970).
    rng = random.Random(0)
    year = NumberNode(integer=True, minimum=1970, maximum=1982)
    for v in range(1970, 1983):
        assert fit_number(str(v), year, rng) == (str(v), False)
    folded, repaired = fit_number("1983", year, rng)
    assert 1970 <= int(folded) <= 1982 and repaired
    assert fit_number("5.5", NumberNode(minimum=0, maximum=5.5), rng) == ("5.5", False)


def test_fit_string_keeps_lengths_and_completes_patterns_and_says_when_it_repaired() -> None:
    rng = random.Random(0)
    assert fit_string("ab\ncd", StringNode(), rng) == ("abcd", False)  # cleaning is no repair
    padded, repaired = fit_string("x", StringNode(min_length=5), rng)
    assert len(padded) == 5 and padded.startswith("x") and repaired
    assert fit_string("abcdefgh", StringNode(max_length=3), rng) == ("abc", True)
    completed, repaired = fit_string("12", StringNode(pattern=r"\d{3}-\d{2}"), rng)
    assert full_match(r"\d{3}-\d{2}", completed) and repaired
    assert fit_string("123-45", StringNode(pattern=r"\d{3}-\d{2}"), rng) == ("123-45", False)


def test_layout_record_flags_exactly_the_value_tokens(den: Denoiser) -> None:
    record = {"a": "xy", "b": 3, "c": True, "d": [None]}
    ids, flags = layout_record(den, record)
    assert len(ids) == len(flags)
    literal = den.decode([i for i, f in zip(ids, flags, strict=True) if not f])
    assert literal == '{"a": "", "b": , "c": true, "d": [null]}'
    values = [i for i, f in zip(ids, flags, strict=True) if f and i != den.eos_id]
    assert den.decode(values) == "xy3"


def test_structure_is_decided_in_rounds_that_grow_with_depth_not_with_choices(den: Denoiser) -> None:
    # 30 optional properties and an array of up to 6 items: every choice is open in the first
    # round's draft; the items' choices come with the items, one round per item at most.
    flat = ObjectNode(tuple(Property(f"p{i}", StringNode(max_length=6), False) for i in range(30)))
    vocab = Vocab(den)
    prompt = den.encode_prompt(den.encode("Write a record.\nRecord:\n"))
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    before = den.forwards
    planned = plan_records(vocab, prompt, flat, 1.0, gens)
    assert den.forwards - before == 1
    records = [fill(v) for _, v in planned]
    assert len({tuple(r) for r in records}) > 1 and all(0 < len(r) < 30 for r in records)
    nested = ObjectNode(
        (
            Property(
                "a", ObjectNode((Property("b", ObjectNode((Property("c", flat, False),)), False),)), False
            ),
        )
    )
    before = den.forwards
    plan_records(vocab, prompt, nested, 1.0, gens)
    assert den.forwards - before <= 4  # one round per level that a draw opened


def test_a_position_attends_only_to_what_its_sight_allows(den: Denoiser) -> None:
    # Per-query attention ([B, L, L]): under a causal sight a position's logits do not depend on
    # the tokens after it (how an open choice is scored from the draft before it).
    prompt = den.encode_prompt(den.encode("Record: "))
    ids = torch.tensor([den.encode('{"a": 1, "b": 2}')])
    other = ids.clone()
    other[0, 6:] = torch.tensor(den.encode('7, "z": 9}'))
    length = ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()[None]
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, :6] = True
    first = den.logits(ids, causal, where, prompt)
    assert torch.allclose(first, den.logits(other, causal, where, prompt), atol=1e-5)
    both_ways = torch.ones_like(ids, dtype=torch.bool)
    assert not torch.allclose(
        den.logits(ids, both_ways, where, prompt), den.logits(other, both_ways, where, prompt)
    )


def test_a_record_stops_growing_where_it_still_fits_the_models_context() -> None:
    small = tiny_random_denoiser()
    small.__dict__["context"] = 160  # as if the model attended over 160 tokens at most
    root = ObjectNode(tuple(Property(f"field{i}", StringNode(max_length=6), i < 2) for i in range(40)))
    vocab = Vocab(small)
    prompt = small.encode_prompt(small.encode("Record: "))
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    planned = plan_records(vocab, prompt, root, 1.0, gens)
    lengths = [len(plan_ids(vocab, plan)) for plan, _ in planned]
    # Drawn freely, about half of the 38 optional properties (some 300 tokens) would be kept.
    assert all(len(prompt.ids) + n <= 160 for n in lengths) and max(lengths) > 60
    assert all({"field0", "field1"} <= set(fill(value)) for _, value in planned)
