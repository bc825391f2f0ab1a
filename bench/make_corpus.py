"""Build the corpus that ``aod-smol-dlm`` is adapted on: instruction/record pairs from offline data.

Sources (all install with the ``train`` extra, nothing is downloaded):

- Faker, in 25 locales: people, addresses, companies, jobs, accounts, orders, products, ...
- scikit-learn's bundled datasets (iris, diabetes, breast cancer, linnerud, wine) as small tables.
- ``vega_datasets`` local tables, EXCEPT the example partitions and the quality benchmark's tables
  (cars, airports, la-riots, seattle-weather), the other weather tables (seattle-temps, sf-temps) and
  the flights tables (their airport codes are the airports table's values): training on those would
  turn copying into a score.

Each table gets a JSON Schema derived from a sample of its records (types, enums for low-cardinality
strings, bounds for numbers, formats for dates and e-mails). Each example is one JSON line in the
corpus format that ``aod_ops.dlm.adapt`` reads: ``{"instruction", "schema", "record", "schema_id"}``.
Instructions are short requests with optional notes and constraints; a constraint is always one that
the record satisfies ("country must be Canada", "price below 10"), so the model learns to follow them.
Whole schemas (``HELDOUT``) go to ``heldout.jsonl`` only, for evaluation.

    python bench/make_corpus.py --out out/corpus [--per-table 1800] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faker import Faker

CORPUS_VERSION = "1"
# Tables held out whole for evaluation (bench/dlm_eval.py); never in train.jsonl.
HELDOUT = ("customer", "shop_item", "library_loan", "wine", "barley")
# Never read: example partitions and the quality benchmark (cars, airports, la-riots, seattle-weather),
# plus tables whose values are theirs (weather series, flights' airport codes).
EXCLUDED_VEGA = {"cars", "airports", "la-riots", "seattle-weather", "seattle-temps", "sf-temps"}

LOCALES = {
    "en_US": "United States", "en_GB": "United Kingdom", "en_CA": "Canada", "fr_CA": "Canada",
    "en_AU": "Australia", "de_DE": "Germany", "fr_FR": "France", "es_ES": "Spain", "it_IT": "Italy",
    "pt_BR": "Brazil", "nl_NL": "Netherlands", "ja_JP": "Japan", "pl_PL": "Poland", "sv_SE": "Sweden",
    "en_IN": "India", "es_MX": "Mexico", "da_DK": "Denmark", "fi_FI": "Finland", "en_IE": "Ireland",
    "pt_PT": "Portugal", "cs_CZ": "Czech Republic", "tr_TR": "Turkey", "ko_KR": "South Korea",
    "zh_CN": "China", "en_NZ": "New Zealand",
}  # fmt: skip
CURRENCY = {
    "United States": "USD", "United Kingdom": "GBP", "Canada": "CAD", "Australia": "AUD", "Japan": "JPY",
    "Poland": "PLN", "Sweden": "SEK", "India": "INR", "Mexico": "MXN", "Denmark": "DKK", "Brazil": "BRL",
    "Czech Republic": "CZK", "Turkey": "TRY", "South Korea": "KRW", "China": "CNY", "New Zealand": "NZD",
}  # fmt: skip

DEPARTMENTS = ["Sales", "Engineering", "Finance", "Marketing", "Support", "Legal", "Operations", "HR"]
INDUSTRIES = ["Retail", "Software", "Banking", "Logistics", "Healthcare", "Energy", "Media", "Education"]
CATEGORIES = ["Books", "Toys", "Garden", "Kitchen", "Electronics", "Sports", "Beauty", "Office"]
GOODS = [
    "lamp", "mug", "backpack", "notebook", "chair", "kettle", "headphones", "scarf", "jacket",
    "blender", "pillow", "umbrella", "wallet", "candle", "desk", "speaker", "bottle", "sneakers",
]  # fmt: skip
NOTES = [
    "Keep the values realistic.", "Use plausible values.", "Test data for a staging database.",
    "Data for a demo dashboard.", "Avoid real people.", "One record only.", "Values should look natural.",
]  # fmt: skip
REQUESTS = [
    "Generate a {noun} record.", "Write one {noun} as JSON.", "Create a realistic {noun}.",
    "Produce a synthetic {noun}.", "A {noun}, please.", "Make up a {noun}.", "Give me a new {noun} entry.",
    "Generate one row of the {noun} table.",
]  # fmt: skip

Record = dict[str, Any]
Maker = Callable[[Faker, str, random.Random], Record]


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", ", ", text).strip()


# Dates are drawn relative to a fixed day, not today, so the corpus is the same whenever it is built.
ANCHOR = dt.datetime(2025, 6, 30, 12, 0, 0)


def _when(spec: str) -> dt.datetime:
    """``"today"`` or ``"-20y"`` / ``"+2y"`` / ``"-30d"``, counted from ``ANCHOR``."""
    if spec == "today":
        return ANCHOR
    days = int(spec[:-1]) * (365 if spec.endswith("y") else 1)
    return ANCHOR + dt.timedelta(days=days)


def _date(fake: Faker, start: str, end: str) -> str:
    return str(fake.date_between(start_date=_when(start).date(), end_date=_when(end).date()).isoformat())


def _datetime(fake: Faker, start: str) -> str:
    return str(fake.date_time_between(start_date=_when(start), end_date=ANCHOR).isoformat(timespec="seconds"))


def _price(rng: random.Random, low: float, high: float) -> float:
    # Log-uniform prices: many cheap items, a few expensive ones.
    return round(low * (high / low) ** rng.random(), 2)


FAKER_TABLES: dict[str, tuple[str, Maker]] = {
    "person": ("person", lambda f, c, r: {
        "first_name": f.first_name(), "last_name": f.last_name(), "email": f.free_email(),
        "phone": f.phone_number(), "city": f.city(), "country": c}),
    "address": ("postal address", lambda f, c, r: {
        "street": _one_line(f.street_address()), "city": f.city(), "postcode": f.postcode(), "country": c}),
    "company": ("company", lambda f, c, r: {
        "name": f.company(), "industry": r.choice(INDUSTRIES), "city": f.city(), "country": c,
        "employees": int(10 ** r.uniform(0.5, 4.5)), "founded": r.randint(1890, 2023)}),
    "employee": ("employee", lambda f, c, r: {
        "name": f.name(), "job": f.job(), "department": r.choice(DEPARTMENTS),
        "salary": r.randrange(22000, 180000, 500), "hire_date": _date(f, "-20y", "today")}),
    "user_account": ("user account", lambda f, c, r: {
        "username": f.user_name(), "email": f.email(), "ip_address": f.ipv4_public(),
        "signup_date": _date(f, "-8y", "today"), "is_active": r.random() < 0.8}),
    "bank_account": ("bank account", lambda f, c, r: {
        "holder": f.name(), "iban": f.iban(), "swift": f.swift(), "currency": CURRENCY.get(c, "EUR"),
        "balance": round(r.uniform(-500, 50000), 2)}),
    "credit_card": ("credit card", lambda f, c, r: {
        "holder": f.name(), "provider": f.credit_card_provider(), "number": f.credit_card_number(),
        "expiry": f"{r.randint(1, 12):02d}/{r.randint(26, 34)}"}),
    "book": ("book", lambda f, c, r: {
        "title": f.sentence(nb_words=r.randint(2, 5)).rstrip("."), "author": f.name(),
        "isbn": f.isbn13(), "year": r.randint(1950, 2024), "price": _price(r, 4, 60)}),
    "order": ("customer order", lambda f, c, r: {
        "order_id": f"ORD-{r.randint(100000, 999999)}", "customer": f.name(),
        "product": f"{f.color_name()} {r.choice(GOODS)}", "quantity": r.randint(1, 12),
        "unit_price": _price(r, 2, 400), "order_date": _date(f, "-3y", "today"),
        "status": r.choice(["pending", "shipped", "delivered", "cancelled", "returned"])}),
    "website": ("website", lambda f, c, r: {
        "url": f.url(), "title": f.catch_phrase(), "language": r.choice(["en", "de", "fr", "es", "ja"]),
        "monthly_visits": int(10 ** r.uniform(2, 7))}),
    "file": ("file", lambda f, c, r: {
        "file_name": f.file_name(), "mime_type": f.mime_type(), "size_bytes": int(10 ** r.uniform(2, 9)),
        "created_at": _datetime(f, "-5y")}),
    "patient": ("patient", lambda f, c, r: {
        "name": f.name(), "birth_date": _date(f, "-95y", "-1y"),
        "blood_type": r.choice(["A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-"]), "city": f.city(),
        "height_cm": r.randint(140, 205), "weight_kg": round(r.uniform(45, 130), 1)}),
    "event": ("event", lambda f, c, r: {
        "name": f"{f.word().title()} {r.choice(['Festival', 'Summit', 'Meetup', 'Fair', 'Concert'])}",
        "city": f.city(), "country": c, "date": _date(f, "-1y", "+2y"),
        "attendees": int(10 ** r.uniform(1, 5))}),
    "review": ("product review", lambda f, c, r: {
        "reviewer": f.user_name(), "rating": r.randint(1, 5), "title": f.sentence(nb_words=r.randint(3, 7)),
        "date": _date(f, "-4y", "today"), "verified": r.random() < 0.7}),
    "job_posting": ("job posting", lambda f, c, r: {
        "title": f.job(), "company": f.company(), "city": f.city(), "country": c,
        "salary_min": r.randrange(20000, 150000, 1000), "remote": r.random() < 0.4}),
    "hotel_booking": ("hotel booking", lambda f, c, r: {
        "guest": f.name(), "hotel": f"{f.last_name()} Hotel", "check_in": _date(f, "-1y", "+1y"),
        "nights": r.randint(1, 14), "room_type": r.choice(["single", "double", "suite", "family"]),
        "price_per_night": _price(r, 35, 600)}),
    "student": ("student", lambda f, c, r: {
        "name": f.name(), "email": f.email(),
        "grade": r.choice(["freshman", "sophomore", "junior", "senior"]),
        "gpa": round(r.uniform(1.5, 4.0), 2), "major": r.choice(
            ["Biology", "History", "Physics", "Economics", "Law", "Art", "Mathematics", "Nursing"])}),
    "product": ("product", lambda f, c, r: {
        "name": f"{f.color_name()} {r.choice(GOODS)}", "category": r.choice(CATEGORIES),
        "price": _price(r, 1, 900), "sku": f.ean13(), "in_stock": r.random() < 0.75}),
    "contact": ("contact", lambda f, c, r: {
        "full_name": f.name(), "phone": f.phone_number(), "address": _one_line(f.address()), "country": c}),
    "transaction": ("card transaction", lambda f, c, r: {
        "timestamp": _datetime(f, "-2y"),
        "amount": _price(r, 1, 3000), "currency": CURRENCY.get(c, "EUR"), "merchant": f.company(),
        "category": r.choice(["groceries", "travel", "dining", "fuel", "utilities", "shopping"])}),
    "network_device": ("network device", lambda f, c, r: {
        "hostname": f.hostname(), "ipv4": f.ipv4_private(), "mac": f.mac_address(),
        "os": r.choice(["Linux", "Windows", "macOS", "FreeBSD", "iOS", "Android"]),
        "last_seen": _datetime(f, "-30d")}),
    # Held out (HELDOUT): unseen combinations of familiar fields, with a country and a price to
    # constrain in the instruction test.
    "customer": ("customer", lambda f, c, r: {
        "name": f.name(), "email": f.free_email(), "city": f.city(), "country": c,
        "loyalty_points": r.randint(0, 20000)}),
    "shop_item": ("shop item", lambda f, c, r: {
        "title": f"{f.color_name()} {r.choice(GOODS)}", "category": r.choice(CATEGORIES),
        "price": _price(r, 1, 500), "stock": r.randint(0, 400)}),
    "library_loan": ("library loan", lambda f, c, r: {
        "member": f.name(), "book_title": f.sentence(nb_words=r.randint(2, 5)).rstrip("."),
        "loan_date": _date(f, "-2y", "today"), "loan_days": r.choice([7, 14, 21, 28])}),
}  # fmt: skip


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _clean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e15 else round(value, 3)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _frame_rows(frame: Any) -> list[Record]:
    frame = frame.rename(columns={c: _snake(str(c)) for c in frame.columns})
    rows = []
    for raw in frame.to_dict(orient="records"):
        row = {k: _clean(v) for k, v in raw.items()}
        if all(v is not None and v == v for v in row.values()):  # drop rows with NaN
            rows.append(row)
    return rows


def table_rows() -> dict[str, tuple[str, list[Record]]]:
    """The scikit-learn and vega_datasets tables as records with snake_case keys."""
    from sklearn import datasets
    from vega_datasets import local_data

    tables: dict[str, tuple[str, list[Record]]] = {}
    iris = datasets.load_iris(as_frame=True)
    frame = iris.frame.assign(species=[iris.target_names[i] for i in iris.target]).drop(columns="target")
    tables["iris"] = ("iris flower measurement", _frame_rows(frame))
    wine = datasets.load_wine(as_frame=True)
    frame = wine.frame.iloc[:, [0, 1, 4, 5, 9, 12]].assign(cultivar=[f"class_{i}" for i in wine.target])
    tables["wine"] = ("wine chemical analysis", _frame_rows(frame))
    diabetes = datasets.load_diabetes(as_frame=True, scaled=False)
    tables["diabetes"] = (
        "diabetes patient measurement",
        _frame_rows(diabetes.frame.iloc[:, [0, 1, 2, 3, 10]]),
    )
    cancer = datasets.load_breast_cancer(as_frame=True)
    frame = cancer.frame.iloc[:, [0, 1, 2, 3, 4, 8]].assign(
        diagnosis=[cancer.target_names[i] for i in cancer.target]
    )
    tables["breast_cancer"] = ("breast tumour measurement", _frame_rows(frame))
    linnerud = datasets.load_linnerud(as_frame=True)
    tables["linnerud"] = ("fitness test", _frame_rows(linnerud.frame))
    nouns = {
        "anscombe": "Anscombe quartet point",
        "barley": "barley yield",
        "burtin": "antibiotic test",
        "crimea": "Crimean war mortality",
        "driving": "US driving statistic",
        "iowa-electricity": "Iowa electricity generation",
        "ohlc": "stock price bar",
        "stocks": "stock price",
        "us-employment": "US employment figure",
        "wheat": "wheat price",
    }
    for name, noun in nouns.items():
        assert name not in EXCLUDED_VEGA
        frame = getattr(local_data, name.replace("-", "_"))()
        if name == "us-employment":
            frame = frame.iloc[:, :6]
        if name == "ohlc":
            frame = frame.drop(columns=["ret"])
        tables[_snake(name)] = (noun, _frame_rows(frame))
    return tables


DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]+$")


def derive_schema(name: str, records: list[Record], enum_max: int = 12) -> dict[str, Any]:
    """A JSON Schema for a table's records: types, enums for low-cardinality strings, bounds, formats."""
    props: dict[str, Any] = {}
    for key in records[0]:
        values = [r[key] for r in records]
        if all(isinstance(v, bool) for v in values):
            props[key] = {"type": "boolean"}
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            props[key] = {"type": "integer", "minimum": min(values), "maximum": max(values)}
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            props[key] = {"type": "number", "minimum": min(values), "maximum": max(values)}
        else:
            texts = [str(v) for v in values]
            distinct = sorted(set(texts))
            prop: dict[str, Any] = {"type": "string"}
            if len(distinct) <= enum_max and len(texts) >= 3 * len(distinct):
                prop["enum"] = distinct
            elif all(DATE_RE.match(t) for t in texts):
                prop["format"] = "date"
            elif all(DATETIME_RE.match(t) for t in texts):
                prop["format"] = "date-time"
            elif all(EMAIL_RE.match(t) for t in texts):
                prop["format"] = "email"
            else:
                prop["maxLength"] = -(-max(len(t) for t in texts) // 10) * 10
            props[key] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": name,
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def _nice_above(value: float, rng: random.Random) -> float:
    """A round threshold a little above ``value`` (so "below T" holds and says something)."""
    for step in (1, 5, 10, 50, 100, 500, 1000, 5000, 10000):
        if value < step * 20:
            return float(step * (int(value // step) + 1 + rng.randint(0, 2)))
    return float(10 ** len(str(int(value))))


def _nice_below(value: float, rng: random.Random) -> float:
    for step in (1, 5, 10, 50, 100, 500, 1000, 5000, 10000):
        if value < step * 20:
            return float(step * max(int(value // step) - rng.randint(0, 2), 0))
    return float(10 ** (len(str(int(value))) - 1))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def constraint(key: str, value: Any, prop: dict[str, Any], rng: random.Random) -> str | None:
    """A constraint that ``value`` satisfies, in words, or None when the field has none worth saying."""
    label = key.replace("_", " ")
    if prop.get("type") in ("integer", "number") and isinstance(value, int | float):
        if value < 0:
            return None
        kind = rng.random()
        if kind < 0.4:
            return f"{label} below {_number(_nice_above(value, rng))}"
        if kind < 0.8 and value > 0:
            return f"{label} at least {_number(_nice_below(value, rng))}"
        return f"{label} between {_number(_nice_below(value, rng))} and {_number(_nice_above(value, rng))}"
    if prop.get("type") == "boolean":
        return f"{label} must be {json.dumps(value)}"
    if isinstance(value, str) and (prop.get("enum") or key in ("country", "city", "currency")):
        return f"{label} must be {value}"
    return None


def instruction(
    noun: str, record: Record, schema: dict[str, Any], country: str | None, rng: random.Random
) -> str:
    """A short request, with optional notes and constraints that ``record`` satisfies."""
    lines = [rng.choice(REQUESTS).format(noun=noun)]
    notes = []
    if country and "country" not in record and rng.random() < 0.4:
        notes.append(f"Records from {country}.")
    if rng.random() < 0.25:
        notes.append(rng.choice(NOTES))
    if notes:
        lines.append("Notes: " + " ".join(notes))
    if rng.random() < 0.45:
        keys = list(record)
        rng.shuffle(keys)
        found = [c for k in keys if (c := constraint(k, record[k], schema["properties"][k], rng))]
        if found:
            lines.append("Constraints: " + "; ".join(found[: rng.choice([1, 1, 1, 2])]) + ".")
    return "\n".join(lines)


def build(out: Path, per_table: int, seed: int) -> dict[str, int]:
    """Write ``train.jsonl`` and ``heldout.jsonl`` under ``out``; return example counts per table."""
    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in LOCALES}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed * 1000 + i)
    sources: dict[str, tuple[str, list[tuple[Record, str | None]]]] = {}
    for name, (noun, make) in FAKER_TABLES.items():
        rows: list[tuple[Record, str | None]] = []
        for _ in range(per_table):
            loc = rng.choice(list(LOCALES))
            rows.append((make(fakers[loc], LOCALES[loc], rng), LOCALES[loc]))
        sources[name] = (noun, rows)
    for name, (noun, records) in table_rows().items():
        # Small tables: each row a few times, each time with another instruction.
        repeats = max(1, min(6, per_table // (2 * len(records))))
        sources[name] = (noun, [(r, None) for r in records for _ in range(repeats)])
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    lines: dict[str, list[str]] = {"train": [], "heldout": []}
    for name, (noun, table) in sources.items():
        schema = derive_schema(name, [r for r, _ in table])
        split = "heldout" if name in HELDOUT else "train"
        for record, country in table:
            text = instruction(noun, record, schema, country, rng)
            example = {"instruction": text, "schema": schema, "record": record, "schema_id": name}
            lines[split].append(json.dumps(example, ensure_ascii=False))
        counts[name] = len(table)
    for split, items in lines.items():
        rng.shuffle(items)
        (out / f"{split}.jsonl").write_text("\n".join(items) + "\n", encoding="utf-8")
    meta = {"version": CORPUS_VERSION, "seed": seed, "per_table": per_table, "tables": counts,
            "heldout": list(HELDOUT), "train_examples": len(lines["train"]),
            "heldout_examples": len(lines["heldout"])}  # fmt: skip
    (out / "corpus.json").write_text(json.dumps(meta, indent=1) + "\n")
    return counts


def main() -> None:
    """Command line: build the corpus."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Some Faker providers draw from sets, whose order follows string hashing: pin it, so
        # the corpus is the same on every build.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/corpus"))
    parser.add_argument("--per-table", type=int, default=1800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build(args.out, args.per_table, args.seed)
    train = sum(n for t, n in counts.items() if t not in HELDOUT)
    print(
        f"{len(counts)} tables, {train} train examples, {sum(counts.values()) - train} held out -> {args.out}"
    )


if __name__ == "__main__":
    main()
