"""Generating candidates for real schemas with the tiny random model, and the property test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aod_ops.cli import main
from aod_ops.dlm.denoiser import Denoiser
from aod_ops.dlm.derive import derive_guides
from aod_ops.dlm.generate import DecodingSettings, Generator, parse_free_text, record_seed
from aod_ops.dlm.models import tiny_random_denoiser
from aod_ops.dlm.prompting import render_prompt
from aod_ops.errors import SchemaError
from aod_ops.schema import compile_schema, load_schema

EXAMPLES = Path(__file__).parent.parent / "examples" / "schemas"
FIXTURES = Path(__file__).parent / "fixtures" / "schemas"
FAST = DecodingSettings(steps=4, temperature=1.0)


@pytest.fixture(scope="module")
def den() -> Denoiser:
    return tiny_random_denoiser()


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_skeleton_mode_is_valid_on_the_example_schemas(den: Denoiser, name: str) -> None:
    schema = load_schema(EXAMPLES / name)
    generator = Generator(den, schema)
    candidates = generator.generate(render_prompt("Write a record."), [1, 2, 3, 4], FAST)
    assert [c.errors for c in candidates] == [()] * 4
    assert all(c.valid and json.loads(c.text) == c.record for c in candidates)
    assert generator.stats.records == 4 and generator.stats.forwards > 0


def test_real_bench_schemas_give_valid_records(den: Denoiser) -> None:
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 10
    valid = 0
    for path in files:
        schema = load_schema(path)
        try:
            generator = Generator(den, schema)
        except SchemaError:  # no value satisfies it (test_schema_compile_whole says which one and why)
            continue
        (candidate,) = generator.generate(render_prompt("Write a record."), [0], FAST)
        valid += candidate.valid
    assert valid / len(files) >= 0.9


def test_an_unsatisfiable_schema_is_an_error_not_null_records(den: Denoiser) -> None:
    with pytest.raises(SchemaError, match=r"no integer from 5 to 1 \(keyword 'maximum' at #\)"):
        Generator(den, load_schema({"type": "integer", "minimum": 5, "maximum": 1}))


def test_generate_exits_2_on_an_unsatisfiable_schema_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = tmp_path / "bad.json"
    schema.write_text('{"type": "integer", "minimum": 5, "maximum": 1}')
    out = tmp_path / "records.jsonl"
    args = ["generate", "--schema", str(schema), "-n", "2", "--model", "tiny-random"]
    assert main([*args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"{schema}: no value can satisfy the schema: no integer from 5 to 1" in err
    assert not out.exists()
    assert main(args) == 2
    assert capsys.readouterr().out == ""  # not a null line on stdout either


def test_a_record_longer_than_the_models_context_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 28 objects of 16 values each: a record of about 15,000 tokens, past tiny-random's 4,096.
    schema = tmp_path / "huge.json"
    schema.write_text('{"minProperties": 28, "additionalProperties": {"minProperties": 16}}')
    out = tmp_path / "records.jsonl"
    args = ["generate", "--schema", str(schema), "-n", "2", "--model", "tiny-random", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "tiny-random: a record of this schema outgrows the model's context of 4096 tokens" in err
    assert not out.exists()


def test_free_mode_reports_unparsable_output_as_a_candidate_not_a_crash(den: Denoiser) -> None:
    schema = load_schema(EXAMPLES / "cars.json")
    settings = DecodingSettings(mode="free", steps=4, block_length=16, max_new_tokens=32)
    prompt = render_prompt("Write a record.", schema.contents)
    candidates = Generator(den, schema).generate(prompt, [5, 6], settings)
    assert len(candidates) == 2
    for c in candidates:  # a random model writes bytes, not JSON
        assert not c.valid and c.errors and c.errors[0].startswith("parse error")


def test_parse_free_text_takes_the_first_json_document() -> None:
    assert parse_free_text('noise {"a": [1, 2]} trailing') == {"a": [1, 2]}
    assert parse_free_text("[1, 2] {") == [1, 2]
    assert parse_free_text('{"a": ') is None
    assert parse_free_text("[" * 5000) is None  # too deep for the parser: no record, no crash
    assert parse_free_text("no json") is None


def test_sample_batches_and_seeds_do_not_overlap_between_runs(den: Denoiser) -> None:
    schema = load_schema(EXAMPLES / "cars.json")
    generator = Generator(den, schema)
    batches: list[int] = []
    out = generator.sample(
        render_prompt("x"), 5, FAST, seed=3, batch_size=2, on_batch=lambda b: batches.append(len(b))
    )
    assert batches == [2, 2, 1]
    assert [c.seed for c in out] == [record_seed(3, i) for i in range(5)]
    assert record_seed(0, 1) != record_seed(1, 0)


# Hypothesis draws schemas from strategies over the keyword families the compiler covers; every
# one must compile and give a valid record, or list the keywords the compiler could not honour.
NAMES = st.text("abcdefgh", min_size=1, max_size=6)
STRINGS = st.fixed_dictionaries(
    {"type": st.just("string")},
    optional={
        "minLength": st.integers(0, 4),
        "maxLength": st.integers(4, 12),
        "format": st.sampled_from(["date", "email", "uuid", "ipv4", "date-time", "hostname"]),
        "pattern": st.sampled_from(["^[A-Z]{2}[0-9]{3}$", "^(red|blue)-[a-z]+$", "[0-9]+"]),
    },
)
NUMBERS = st.fixed_dictionaries(
    {"type": st.sampled_from(["integer", "number"])},
    optional={
        "minimum": st.integers(-50, 0),
        "maximum": st.integers(1, 50),
        "exclusiveMaximum": st.integers(51, 60),
        "multipleOf": st.sampled_from([1, 2, 5, 0.5]),
    },
)
CHOICES = st.one_of(
    st.fixed_dictionaries(
        {"enum": st.lists(st.one_of(NAMES, st.integers(), st.none()), min_size=1, max_size=4)}
    ),
    st.fixed_dictionaries({"const": NAMES}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
)
LEAVES = st.one_of(STRINGS, NUMBERS, CHOICES)


def objects(children: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    """Objects over drawn children, with some of their properties required."""

    def build(props: dict, data: st.DataObject) -> dict:
        required = data.draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    return st.builds(build, st.dictionaries(NAMES, children, max_size=4), st.data())


SCHEMAS = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        objects(children),
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": children},
            optional={"minItems": st.integers(0, 2), "maxItems": st.integers(2, 4)},
        ),
        st.builds(lambda a, b: {"anyOf": [a, b]}, children, children),
        st.builds(lambda a, b: {"allOf": [a, b]}, NUMBERS, NUMBERS),
    ),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=objects(SCHEMAS), seed=st.integers(0, 1000))
def test_property_compile_and_generate_is_valid_or_says_what_it_cannot_honour(
    den: Denoiser, schema: dict, seed: int
) -> None:
    loaded = load_schema(schema)
    try:
        compiled = compile_schema(loaded)
    except SchemaError as error:  # a drawn pattern longer than its maxLength: nothing satisfies it
        assert "no value can satisfy the schema" in str(error)
        return
    (candidate,) = Generator(den, loaded, compiled).generate(render_prompt("x"), [seed], FAST)
    assert candidate.valid or compiled.unsupported, (schema, candidate.text, candidate.errors)


def test_sample_passes_guides_to_every_batch_and_candidates_count_their_slots(den: Denoiser) -> None:
    schema = load_schema(EXAMPLES / "cars.json")
    generator = Generator(den, schema)
    assert generator.compiled is not None
    reference = [{"Weight_in_lbs": w, "Year": 1970 + w % 13} for w in range(2000, 2100)]
    guides = derive_guides(generator.compiled.root, reference)
    out = generator.sample(render_prompt("x"), 3, FAST, seed=1, batch_size=2, guides=guides)
    assert [c.slots for c in out] == [7, 7, 7]
    assert all(c.valid and 2000 <= c.record["Weight_in_lbs"] <= 2099 for c in out)
    free = DecodingSettings(mode="free", steps=2, block_length=8, max_new_tokens=8)
    assert [(c.slots, c.repaired) for c in generator.generate(render_prompt("x"), [1], free)] == [(0, 0)]


@pytest.mark.parametrize(
    "decoding",
    [
        DecodingSettings(steps=4),
        DecodingSettings(steps=4, cache=False, order="confidence"),
        DecodingSettings(steps=4, mode="free", max_new_tokens=40),
    ],
    ids=["skeleton", "skeleton-full-passes", "free"],
)
def test_every_tensor_the_sampler_builds_lives_on_the_models_device(
    den: Denoiser, decoding: DecodingSettings
) -> None:
    # With no GPU here: the default device is made `meta`, so a tensor built without naming the
    # model's device lands there and the first operation that mixes it with the model's (CPU)
    # tensors fails, as a CPU tensor would beside a CUDA model. A device-correct run completes.
    import torch

    schema = load_schema(EXAMPLES / "la-riots.json")
    data = EXAMPLES.parent / "data" / "la-riots_reference.jsonl"
    reference = [json.loads(line) for line in data.read_text().splitlines()]
    generator = Generator(den, schema)
    assert generator.compiled is not None
    guides = derive_guides(generator.compiled.root, reference) if decoding.mode == "skeleton" else None
    with torch.device("meta"):
        candidates = generator.generate(render_prompt("Write a record."), [1, 2, 3], decoding, guides)
    assert len(candidates) == 3
    if decoding.mode == "skeleton":
        assert all(c.valid for c in candidates)
