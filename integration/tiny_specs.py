"""Partition specs for the end-to-end tests: example tables the tiny random DLM can fill.

The tiny random DLM writes the structure right (the compiler's skeleton) but free text as noise,
which the judge rejects, and its numbers repeat small-domain reference values (years) more than
the privacy gates allow. So the specs hold tables without free text: ``seattle-weather`` as in
the examples, ``weather-b`` (the same table with the reference and held-out samples swapped and
another seed), ``car-specs`` (the cars table without the model name; for jobs, not for the
gates) and ``broken``, whose schema is not a valid JSON Schema. Everything sits in one folder,
so that a Ray job can carry the spec's folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BROKEN_SCHEMA = {"type": "object", "properties": {"x": {"type": "strin"}}}
WEATHER_NOTES = "Daily weather at Seattle, 2012-2015."


def _copy_examples(folder: Path) -> None:
    for name in ("seattle-weather_reference.jsonl", "seattle-weather_holdout.jsonl"):
        shutil.copy(EXAMPLES / "data" / name, folder / "data" / name)
    shutil.copy(EXAMPLES / "schemas" / "seattle-weather.json", folder / "schemas" / "seattle-weather.json")
    cars = json.loads((EXAMPLES / "schemas" / "cars.json").read_text())
    del cars["properties"]["Name"]
    cars["required"].remove("Name")
    cars["title"] = "Car specifications"
    (folder / "schemas" / "car-specs.json").write_text(json.dumps(cars, indent=1))
    for part in ("reference", "holdout"):
        lines = (EXAMPLES / "data" / f"cars_{part}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        text = "".join(json.dumps({k: v for k, v in r.items() if k != "Name"}) + "\n" for r in records)
        (folder / "data" / f"car-specs_{part}.jsonl").write_text(text)
    (folder / "schemas" / "broken.json").write_text(json.dumps(BROKEN_SCHEMA))


def _partitions(rows: int) -> dict[str, dict[str, Any]]:
    weather = {"schema": "schemas/seattle-weather.json", "rows": rows, "notes": WEATHER_NOTES}
    return {
        "seattle-weather": {
            **weather,
            "reference": "data/seattle-weather_reference.jsonl",
            "holdout": "data/seattle-weather_holdout.jsonl",
        },
        "weather-b": {
            **weather,
            "reference": "data/seattle-weather_holdout.jsonl",
            "holdout": "data/seattle-weather_reference.jsonl",
            "seed": 1,
        },
        "car-specs": {
            "schema": "schemas/car-specs.json",
            "reference": "data/car-specs_reference.jsonl",
            "rows": rows,
            "notes": "Passenger cars sold in the US, Europe and Japan, 1970-1982.",
        },
        "broken": {
            "schema": "schemas/broken.json",
            "reference": "data/car-specs_reference.jsonl",
            "rows": rows,
        },
    }


def write_tiny_spec(folder: Path, partitions: Sequence[str], rows: int = 8) -> Path:
    """Write a spec of the named partitions (the tiny random DLM, one short loop round) and its files."""
    (folder / "schemas").mkdir(parents=True)
    (folder / "data").mkdir()
    _copy_examples(folder)
    known = _partitions(rows)
    spec = {
        "defaults": {"dlm": "tiny-random", "loop": {"rounds": 1, "candidates": 4, "proposals": 1}},
        "partitions": [{"name": name, **known[name]} for name in partitions],
    }
    path = folder / "partitions.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
