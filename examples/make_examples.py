"""Make the example partitions' schemas and data extracts from the local `vega_datasets` tables.

Run from the repository root: ``python examples/make_examples.py``. The output is deterministic
(fixed seed), so the committed files can be re-made and compared. Each table gives a reference
extract (the real sample the synthetic data must not copy) and a disjoint held-out extract
(other rows of the same table, the baseline for distance-to-closest-record). Rows with missing
values are dropped so that every property can be required.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
from vega_datasets import local_data

HERE = Path(__file__).resolve().parent
SEED = 7
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _string(description: str, max_length: int = 80, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "description": description, **extra}


def _number(description: str, minimum: float, maximum: float, integer: bool = False) -> dict[str, Any]:
    kind = "integer" if integer else "number"
    return {"type": kind, "minimum": minimum, "maximum": maximum, "description": description}


def _enum(description: str, values: list[Any]) -> dict[str, Any]:
    return {"enum": values, "description": description}


def _object(title: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "title": title,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _iso_date(column: pd.Series) -> pd.Series:
    return column.dt.strftime("%Y-%m-%d")


def cars() -> tuple[dict[str, Any], pd.DataFrame, int]:
    """Passenger cars 1970-1982: a numeric table with two categorical columns."""
    df = local_data.cars().dropna()
    df["Year"] = df["Year"].dt.year
    df["Horsepower"] = df["Horsepower"].astype(int)
    schema = _object(
        "Car model",
        "One passenger car model sold in the US, Europe or Japan between 1970 and 1982.",
        {
            "Name": _string("Make and model in lower case, e.g. 'ford pinto'.", 60),
            "Miles_per_Gallon": _number("Fuel economy in miles per US gallon.", 5, 60),
            "Cylinders": _enum("Number of engine cylinders.", [3, 4, 5, 6, 8]),
            "Displacement": _number("Engine displacement in cubic inches.", 50, 500),
            "Horsepower": _number("Engine power in horsepower.", 40, 250, integer=True),
            "Weight_in_lbs": _number("Curb weight in pounds.", 1500, 5500, integer=True),
            "Acceleration": _number("Seconds from 0 to 60 mph.", 8, 25),
            "Year": _number("Model year.", 1970, 1982, integer=True),
            "Origin": _enum("Region of manufacture.", ["USA", "Europe", "Japan"]),
        },
    )
    return schema, df, 200


def airports() -> tuple[dict[str, Any], pd.DataFrame, int]:
    """US airports: codes, names and coordinates."""
    df = local_data.airports().dropna()
    schema = _object(
        "Airport",
        "An airport or airfield listed by the US Federal Aviation Administration.",
        {
            "iata": _string("FAA/IATA location identifier.", 4, pattern="^[0-9A-Z]{3,4}$"),
            "name": _string("Name of the airport.", 80),
            "city": _string("City the airport serves.", 60),
            "state": _string("Two-letter US state or territory code.", 2, pattern="^[A-Z]{2}$"),
            "country": _enum(
                "Country.", sorted(df["country"].unique().tolist(), key=lambda c: (c != "USA", c))
            ),
            "latitude": _number("Latitude in decimal degrees.", -90, 90),
            "longitude": _number("Longitude in decimal degrees.", -180, 180),
        },
    )
    return schema, df, 200


def la_riots() -> tuple[dict[str, Any], pd.DataFrame, int]:
    """Deaths during the 1992 Los Angeles riots: personal data (names, ages, addresses)."""
    df = local_data.la_riots().dropna()
    df["age"] = df["age"].astype(int)
    df["death_date"] = _iso_date(df["death_date"])
    schema = _object(
        "Death during the 1992 Los Angeles riots",
        "A person who died in connection with the Los Angeles riots of April-May 1992.",
        {
            "first_name": _string("Given name(s) of the person.", 40),
            "last_name": _string("Family name of the person.", 40),
            "age": _number("Age in years at death.", 0, 110, integer=True),
            "gender": _enum("Gender.", ["Male", "Female"]),
            "race": _enum("Race or ethnicity as reported.", ["Asian", "Black", "Latino", "White"]),
            "death_date": _string("Date of death.", 10, format="date"),
            "address": _string("Street address or intersection where the death occurred.", 80),
            "neighborhood": _string("Neighborhood of Los Angeles County.", 40),
            "type": _enum(
                "Circumstances of the death.",
                ["Death", "Homicide", "Not riot-related", "Officer-involved shooting"],
            ),
            "longitude": _number("Longitude of the address.", -119.0, -117.5),
            "latitude": _number("Latitude of the address.", 33.5, 34.9),
        },
    )
    return schema, df, 40


def seattle_weather() -> tuple[dict[str, Any], pd.DataFrame, int]:
    """Daily weather in Seattle 2012-2015."""
    df = local_data.seattle_weather()
    df["date"] = _iso_date(df["date"])
    schema = _object(
        "Daily weather in Seattle",
        "One day of weather observations at Seattle, Washington.",
        {
            "date": _string("Day of the observation.", 10, format="date"),
            "precipitation": _number("Precipitation in millimetres.", 0, 100),
            "temp_max": _number("Daily maximum temperature in degrees Celsius.", -20, 45),
            "temp_min": _number("Daily minimum temperature in degrees Celsius.", -25, 35),
            "wind": _number("Mean wind speed in metres per second.", 0, 20),
            "weather": _enum("Dominant weather of the day.", ["drizzle", "fog", "rain", "snow", "sun"]),
        },
    )
    return schema, df, 200


TABLES: dict[str, Callable[[], tuple[dict[str, Any], pd.DataFrame, int]]] = {
    "cars": cars,
    "airports": airports,
    "la-riots": la_riots,
    "seattle-weather": seattle_weather,
}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    """Write ``schemas/<name>.json``, ``data/<name>_reference.jsonl`` and ``data/<name>_holdout.jsonl``."""
    (HERE / "schemas").mkdir(exist_ok=True)
    (HERE / "data").mkdir(exist_ok=True)
    for name, make in TABLES.items():
        schema, df, n_reference = make()
        shuffled = df.sample(frac=1.0, random_state=SEED)
        # The held-out extract is half the reference's size, from rows the reference does not hold.
        n_holdout = min(n_reference // 2, len(shuffled) - n_reference)
        rows = json.loads(shuffled.to_json(orient="records", double_precision=6))
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        for row in rows[: n_reference + n_holdout]:
            validator.validate(row)
        (HERE / "schemas" / f"{name}.json").write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        _write_jsonl(HERE / "data" / f"{name}_reference.jsonl", rows[:n_reference])
        _write_jsonl(HERE / "data" / f"{name}_holdout.jsonl", rows[n_reference : n_reference + n_holdout])
        print(f"{name}: {n_reference} reference rows, {n_holdout} held-out rows of {len(df)}")


if __name__ == "__main__":
    main()
