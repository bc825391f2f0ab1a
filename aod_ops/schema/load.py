"""Load a JSON Schema, check it against its draft's meta-schema, and make its ``$ref`` resolvable.

``load_schema`` accepts a file path or a dict. The draft comes from ``$schema`` (draft 4, 6, 7,
2019-09, 2020-12; 2020-12 when undeclared). References resolve through a ``referencing``
registry: local pointers and anchors, the standard meta-schemas, and other schema files next to
the schema (read from disk once, at load time). Every problem is a ``SchemaError`` whose message
names the file and, where there is one, the JSON pointer of the offending keyword.

Hostile input is bounded: a schema file larger than ``MAX_SCHEMA_BYTES``, a document of more
than ``MAX_SCHEMA_VALUES`` JSON values, or one nested deeper than ``MAX_DEPTH`` levels (a
``$ref`` counting as a level) is refused with a one-line error naming the limit; a record nested
deeper than ``MAX_DEPTH`` is invalid, never a ``RecursionError``. Validation matches schema
patterns and checks formats in bounded time (``bounded.py``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import jsonschema
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as META_SCHEMAS
from referencing import Registry, Resource, Specification

from aod_ops import storage
from aod_ops.errors import SchemaError
from aod_ops.jsonvalues import json_pointer
from aod_ops.schema.bounded import bounded_validator
from aod_ops.schema.patterns import UncheckedPattern

# Normalised $schema URI (no scheme, no trailing '#' or '/') -> (name, validator, specification).
# The validators match patterns and check formats in bounded time (bounded.py).
_DRAFTS: dict[str, tuple[str, type[Validator], Specification[Any]]] = {
    "json-schema.org/draft-04/schema": (
        "draft4",
        bounded_validator(jsonschema.Draft4Validator),
        referencing.jsonschema.DRAFT4,
    ),
    "json-schema.org/draft-06/schema": (
        "draft6",
        bounded_validator(jsonschema.Draft6Validator),
        referencing.jsonschema.DRAFT6,
    ),
    "json-schema.org/draft-07/schema": (
        "draft7",
        bounded_validator(jsonschema.Draft7Validator),
        referencing.jsonschema.DRAFT7,
    ),
    "json-schema.org/draft/2019-09/schema": (
        "draft2019-09",
        bounded_validator(jsonschema.Draft201909Validator),
        referencing.jsonschema.DRAFT201909,
    ),
    "json-schema.org/draft/2020-12/schema": (
        "draft2020-12",
        bounded_validator(jsonschema.Draft202012Validator),
        referencing.jsonschema.DRAFT202012,
    ),
}
_BY_NAME = {name: (cls, spec) for name, cls, spec in _DRAFTS.values()}
_DEFAULT_DRAFT = "json-schema.org/draft/2020-12/schema"

MAX_DEPTH = 64
"""How many levels a schema document, a chain of ``$ref`` through schemas, or a record may nest.

Each object or array is a level, and so is each ``$ref`` followed. Real schemas stay far below
(JSONSchemaBench's deepest are 24 levels, KubeRay's CRDs 31); validating and compiling recurse
several Python frames per level, so past about 200 levels they would hit Python's recursion limit.
"""

MAX_SCHEMA_BYTES = 4 * 2**20
"""The largest schema file read (JSONSchemaBench's largest is 330 KB)."""

MAX_SCHEMA_VALUES = 100_000
"""The most JSON values a schema document may hold (the largest seen: 4,000 in JSONSchemaBench,
14,000 in a KubeRay CRD)."""

# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
SCHEMA_KEYWORDS = frozenset(
    {
        "additionalItems",
        "additionalProperties",
        "contains",
        "contentSchema",
        "else",
        "if",
        "items",
        "not",
        "propertyNames",
        "then",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
SCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
SCHEMA_MAP_KEYWORDS = frozenset(
    {"$defs", "definitions", "dependentSchemas", "dependencies", "patternProperties", "properties"}
)


@dataclass(frozen=True)
class ValidationIssue:
    """One way an instance breaks its schema.

    ``pointer`` is the JSON pointer of the offending value in the instance ("" for the root),
    ``keyword`` the schema keyword that failed (``"pattern"``, ``"required"``...), ``value`` the
    offending instance value itself (None past ``MAX_DEPTH``, keyword ``"depth"``: printing it
    could recurse past Python's limit).
    """

    pointer: str
    message: str
    keyword: str
    value: Any


@dataclass(frozen=True)
class LoadedSchema:
    """A checked JSON Schema with everything needed to resolve its references and validate.

    ``source`` is the file path, or ``"<dict>"``; ``draft`` is one of ``draft4``, ``draft6``,
    ``draft7``, ``draft2019-09``, ``draft2020-12``; ``base_uri`` is the URI that relative
    references resolve against (the schema's ``$id`` joined to its file's URI).
    """

    contents: dict[str, Any]
    source: str
    draft: str
    registry: Registry[Any]
    base_uri: str
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def validator_class(self) -> type[Validator]:
        """The ``jsonschema`` validator class of this schema's draft, its patterns and formats bounded."""
        return _BY_NAME[self.draft][0]

    @property
    def specification(self) -> Specification[Any]:
        """The ``referencing`` specification of this schema's draft."""
        return _BY_NAME[self.draft][1]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled small (a Ray actor's constructor argument): the schema and the files it refers
        to, without the standard meta-schemas every process has."""
        own = {uri: self.registry[uri].contents for uri in self.registry if uri not in META_SCHEMAS}
        return (_unpickle, (self.contents, self.source, self.draft, self.base_uri, own))

    def validator(self) -> Validator:
        """A validator for this schema (format checking on), built once and cached."""
        if "validator" not in self._memo:
            cls = self.validator_class
            self._memo["validator"] = cls(
                self.contents, registry=self.registry, format_checker=cls.FORMAT_CHECKER
            )
        validator: Validator = self._memo["validator"]
        return validator

    def is_valid(self, instance: Any) -> bool:
        """Whether ``instance`` is valid (``errors`` is empty), found faster: it stops at the first."""
        if too_deep(instance) is not None:
            return False
        try:
            return bool(self.validator().is_valid(instance))
        except Exception:  # as in errors(): a value that cannot be checked is not valid
            return False

    def errors(self, instance: Any) -> list[ValidationIssue]:
        """Every way ``instance`` breaks the schema, most specific error first per location.

        An ``anyOf``/``oneOf`` failure is reported through its most relevant sub-error
        (``jsonschema.exceptions.best_match``), which names the real culprit. A value nested
        deeper than ``MAX_DEPTH`` gets one issue at the first place past the limit; a pattern that
        timed out names itself and its place in the schema.
        """
        deep = too_deep(instance)
        if deep is not None:
            message = f"nested deeper than {MAX_DEPTH} levels; the limit is {MAX_DEPTH}"
            return [ValidationIssue(pointer=deep, message=message, keyword="depth", value=None)]
        issues = []
        try:
            errors = list(self.validator().iter_errors(instance))
        except RecursionError:
            # A $ref cycle that never moves into the value recurses for ever.
            message = "the schema recurses without end on this value (a $ref cycle)"
            return [ValidationIssue(pointer="", message=message, keyword="$ref", value=instance)]
        except Exception as crash:
            # jsonschema itself fails on some malformed schemas (a non-string "id" it walks
            # into): the record cannot be shown valid, so it is reported invalid, not a crash.
            message = f"the validator cannot check this value against the schema: {crash!r}"
            return [ValidationIssue(pointer="", message=message, keyword="schema", value=instance)]
        for error in errors:
            best = best_match([error]) or error
            message = best.message
            if isinstance(best.cause, UncheckedPattern):
                message += f" (at schema path #{json_pointer(best.absolute_schema_path)})"
            issues.append(
                ValidationIssue(
                    pointer=json_pointer(best.absolute_path),
                    message=message,
                    keyword=str(best.validator),
                    value=best.instance,
                )
            )
        return sorted(issues, key=lambda issue: issue.pointer)


def _unpickle(
    contents: dict[str, Any], source: str, draft: str, base_uri: str, own: dict[str, Any]
) -> LoadedSchema:
    spec = _BY_NAME[draft][1]
    resources = {uri: Resource.from_contents(doc, default_specification=spec) for uri, doc in own.items()}

    def retrieve(uri: str) -> Resource[Any]:  # a reference relative to the schema's file, as at load time
        try:
            return resources[urljoin(base_uri, uri)]
        except KeyError:
            raise referencing.exceptions.NoSuchResource(ref=uri) from None  # type: ignore[call-arg]

    registry: Registry[Any] = (
        Registry(retrieve=retrieve)  # type: ignore[call-arg]
        .with_resources(META_SCHEMAS.items())
        .with_resources(resources.items())
    )
    return LoadedSchema(contents=contents, source=source, draft=draft, registry=registry, base_uri=base_uri)


def load_schema(source: str | Path | dict[str, Any]) -> LoadedSchema:
    """Read, check and prepare a JSON Schema from a file (a path or a URI) or a dict.

    Raises ``SchemaError`` for an unreadable file, invalid JSON (with line and column), an
    unknown ``$schema``, a schema that breaks its meta-schema (with the JSON pointer of the bad
    keyword), a ``$ref`` that cannot be resolved (with the pointer of the ``$ref``), a schema
    past a size or nesting limit (naming the limit), or ``unevaluatedProperties`` beside
    ``patternProperties`` (which ``jsonschema`` would match with no time limit).
    """
    if isinstance(source, dict):
        name, path, contents = "<dict>", None, source
    else:
        path = storage.locate(source)
        name = str(source)
        contents = _read_json(path)
    if isinstance(contents, bool):
        # The boolean schemas: true accepts everything, false nothing.
        contents = {} if contents else {"not": {}}
    if not isinstance(contents, dict):
        kind = type(contents).__name__
        raise SchemaError(f"{name}: a JSON Schema must be an object or a boolean, not {kind}")
    _check_size(contents, name)
    draft, cls, spec = _draft(contents, name)
    _check_against_meta_schema(contents, cls, name)

    file_uri = storage.uri(path) if path is not None else ""
    own_id = _id_of(spec, contents)
    base_uri = urldefrag(urljoin(file_uri, own_id))[0] if own_id else file_uri
    cache: dict[str, Resource[Any]] = {}
    retrieve = _retriever(path, base_uri, spec, cache)
    registry: Registry[Any] = (
        Registry(retrieve=retrieve)  # type: ignore[call-arg]
        .with_resources(META_SCHEMAS.items())
        .with_resource(base_uri, spec.create_resource(contents))
    )
    _check_refs(contents, Scope(registry.resolver(base_uri), base_uri, spec), name)
    # Files read while checking references join the registry, so validation never rereads them.
    registry = registry.with_resources(cache.items())
    return LoadedSchema(contents=contents, source=name, draft=draft, registry=registry, base_uri=base_uri)


def _read_json(path: storage.Location) -> Any:
    try:
        size = storage.size(path)
        if size > MAX_SCHEMA_BYTES:
            raise SchemaError(f"{path}: {size} bytes, larger than the limit of {MAX_SCHEMA_BYTES} bytes")
        text = storage.read_text(path)
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise SchemaError(f"{path}: cannot read schema: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SchemaError(
            f"{path}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:  # the JSON parser recurses once per level: a few hundred levels is its end
        raise SchemaError(
            f"{path}: nested deeper than {MAX_DEPTH} levels; the limit is {MAX_DEPTH}"
        ) from None


def _check_size(contents: Any, name: str) -> None:
    """``SchemaError`` naming the limit when a schema document is too large or too deeply nested."""
    values, deep = _walk(contents, MAX_SCHEMA_VALUES)
    if values > MAX_SCHEMA_VALUES:
        raise SchemaError(
            f"{name}: more than {MAX_SCHEMA_VALUES} JSON values; the limit is {MAX_SCHEMA_VALUES}"
        )
    if deep is not None:
        where = _shorten(deep)
        raise SchemaError(
            f"{name}: nested deeper than {MAX_DEPTH} levels at #{where}; the limit is {MAX_DEPTH}"
        )


def too_deep(value: Any) -> str | None:
    """The JSON pointer of the first place in ``value`` nested past ``MAX_DEPTH``, if any.

    Code that recurses over a record (validation, flattening it into leaves) checks this first.
    """
    return _walk(value, None)[1]


def _walk(value: Any, most: int | None) -> tuple[int, str | None]:
    """How many JSON values ``value`` holds (counted up to ``most``, when given) and the pointer
    of the first one nested past ``MAX_DEPTH`` levels. Iterative: the value may be deep."""
    count = 0
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, pointer, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            return count, pointer
        if most is not None and count > most:
            return count, None
        if isinstance(item, dict):
            stack.extend((v, pointer + json_pointer((str(k),)), depth + 1) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{pointer}/{i}", depth + 1) for i, v in enumerate(item))
    return count, None


def _shorten(pointer: str, keep: int = 48) -> str:
    """A long JSON pointer cut after its first ``keep`` characters (at a ``/``) for a message."""
    if len(pointer) <= keep:
        return pointer
    return pointer[: pointer.rfind("/", 0, keep + 1)] + "/..."


def _draft(contents: dict[str, Any], name: str) -> tuple[str, type[Validator], Specification[Any]]:
    declared = contents.get("$schema")
    if declared is None:
        return _DRAFTS[_DEFAULT_DRAFT]
    if not isinstance(declared, str):
        raise SchemaError(f"{name}: $schema must be a URI string, not {declared!r}")
    key = declared.strip().split("://", 1)[-1].rstrip("#").rstrip("/")
    if key not in _DRAFTS:
        raise SchemaError(
            f"{name}: unknown $schema {declared!r}; supported: draft-04, draft-06, draft-07, 2019-09, 2020-12"
        )
    return _DRAFTS[key]


_META_VALIDATORS: dict[Any, Validator] = {}


def _check_against_meta_schema(contents: Any, cls: type[Validator], name: str) -> None:
    meta = _META_VALIDATORS.get(cls)
    if meta is None:
        # cls is bounded: "format": "regex" compiles each pattern, and deep parentheses recurse.
        meta = _META_VALIDATORS[cls] = cls(cls.META_SCHEMA, format_checker=cls.FORMAT_CHECKER)
    with warnings.catch_warnings():
        # Python's re warns about syntax that may change meaning later; the pattern still compiles.
        warnings.simplefilter("ignore", FutureWarning)
        error: ValidationError | None = best_match(meta.iter_errors(contents))
    if error is not None:
        pointer = json_pointer(error.absolute_path)
        where = f"at {pointer}" if pointer else "at the root"
        raise SchemaError(f"{name}: invalid schema {where}: {error.message}")


def _retriever(
    path: storage.Location | None, base_uri: str, spec: Specification[Any], cache: dict[str, Resource[Any]]
) -> Callable[[str], Resource[Any]]:
    """Retrieve referenced documents from the schema's own storage only: schema files next to it."""
    root_dir = storage.parent(path) if path is not None else None

    def local_file(uri: str) -> storage.Location | None:
        parts = urlsplit(uri)
        if parts.scheme == "file":
            return Path(unquote(parts.path))
        if root_dir is None:
            return None
        if not parts.scheme:
            return storage.join(root_dir, unquote(parts.path))
        if storage.is_remote(root_dir) and uri.startswith(storage.uri(root_dir) + "/"):
            return uri  # a file next to a schema read from an object store
        # An absolute $id (https://example.com/schemas/a.json) names files by their path under
        # the $id's folder; the same relative path is looked up next to the schema file.
        folder = urljoin(base_uri, ".")
        if uri.startswith(folder) and folder.split("://", 1)[0] in {"http", "https"}:
            return storage.join(root_dir, unquote(uri[len(folder) :]))
        return None

    def retrieve(uri: str) -> Resource[Any]:
        if uri in cache:
            return cache[uri]
        file = local_file(uri)
        if file is None or not storage.is_file(file):
            raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]
        contents = _read_json(file)
        _check_size(contents, str(file))
        draft_key = (
            contents.get("$schema", "").split("://", 1)[-1].rstrip("#").rstrip("/")
            if isinstance(contents, dict)
            else ""
        )
        cls = _DRAFTS[draft_key][1] if draft_key in _DRAFTS else _BY_NAME[_spec_name(spec)][0]
        _check_against_meta_schema(contents, cls, str(file))
        resource = Resource.from_contents(contents, default_specification=spec)
        cache[uri] = resource
        return resource

    return retrieve


def _spec_name(spec: Specification[Any]) -> str:
    return next(name for name, (_, known) in _BY_NAME.items() if known is spec)


def _subschemas(schema: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Each direct subschema of ``schema`` with its path relative to ``schema``."""
    for keyword, value in schema.items():
        if keyword in SCHEMA_KEYWORDS and isinstance(value, dict | bool):
            yield (keyword,), value
        elif keyword in SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            for index, item in enumerate(value):
                yield (keyword, str(index)), item
        elif keyword in SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, dict | bool):
                    yield (keyword, key), item


@dataclass(frozen=True)
class Scope:
    """Where a subschema sits for reference resolution: a ``referencing`` resolver and its base URI.

    ``enter`` steps into a subschema (taking its ``$id`` into account); ``follow`` resolves a
    ``$ref`` from here and returns the target, its scope and its URI. The lookups go through the
    resolver; ``base`` only names places in messages.
    """

    resolver: Any
    base: str
    specification: Specification[Any]

    def enter(self, schema: Any) -> Scope:
        """The scope inside ``schema``: a new base URI when it declares an ``$id``."""
        own_id = _id_of(self.specification, schema)
        if not own_id:
            return self
        resource = self.specification.create_resource(schema)
        return Scope(self.resolver.in_subresource(resource), urljoin(self.base, own_id), self.specification)

    def follow(self, ref: str, where: str) -> tuple[Any, Scope, str]:
        """Resolve ``ref``; ``SchemaError`` naming ``where`` when it cannot be resolved."""
        target = self.base + ref if ref.startswith("#") else urljoin(self.base, ref)
        try:
            resolved = self.resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as error:
            cause: BaseException | None = error
            while cause is not None:
                # A referenced file that fails to load reports its own problem.
                if isinstance(cause, SchemaError):
                    raise cause from None
                cause = cause.__cause__
            raise SchemaError(f"{where}: cannot resolve {ref!r}") from None
        return resolved.contents, Scope(resolved.resolver, urldefrag(target)[0], self.specification), target


def _id_of(spec: Specification[Any], schema: Any) -> str | None:
    """The schema's ``$id`` (``id`` in draft 4), ignoring one that is not a string."""
    if not isinstance(schema, dict) or not isinstance(schema.get("$id", schema.get("id")), str):
        return None
    own_id: str | None = spec.id_of(schema)
    return own_id


def _check_refs(contents: dict[str, Any], scope: Scope, name: str) -> None:
    """Resolve every ``$ref`` reachable in the schema and the documents it references, once each.

    Also refuses a path through subschemas and references that nests deeper than ``MAX_DEPTH``
    (each ``$ref`` followed counts as a level; a reference back to a schema on the path is
    recursion, which a record's own depth bounds), and ``unevaluatedProperties`` anywhere beside
    ``patternProperties`` anywhere.
    """
    below: dict[int, int] = {}  # levels under a schema already walked, by identity
    on_path: set[int] = set()
    found: dict[str, str] = {}  # keyword -> where it was first seen

    def visit(schema: Any, here: Scope, pointer: str, where: str, depth: int, enter: bool) -> int:
        if depth > MAX_DEPTH:
            raise SchemaError(
                f"{where}: nested deeper than {MAX_DEPTH} levels at #{_shorten(pointer)}, counting each "
                f"$ref as a level; the limit is {MAX_DEPTH}"
            )
        if not isinstance(schema, dict) or id(schema) in on_path:
            return 0
        if id(schema) not in below:
            on_path.add(id(schema))
            if enter:
                here = here.enter(schema)
            for keyword in ("unevaluatedProperties", "patternProperties"):
                if keyword in schema:
                    found.setdefault(keyword, f"{where} at #{pointer}")
            levels = 0
            for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
                ref = schema.get(keyword)
                if isinstance(ref, str):
                    target, there, uri = here.follow(ref, f"{where}: {keyword} at {pointer or '/'}")
                    document, fragment = urldefrag(uri)
                    inside = name if document == scope.base else document
                    levels = max(levels, 1 + visit(target, there, fragment, inside, depth + 1, False))
            for parts, subschema in _subschemas(schema):
                inner = visit(subschema, here, pointer + json_pointer(parts), where, depth + len(parts), True)
                levels = max(levels, len(parts) + inner)
            on_path.discard(id(schema))
            below[id(schema)] = levels
        if depth + below[id(schema)] > MAX_DEPTH:  # reached again, deeper than the first time
            raise SchemaError(
                f"{where}: nested deeper than {MAX_DEPTH} levels below #{_shorten(pointer)}, counting "
                f"each $ref as a level; the limit is {MAX_DEPTH}"
            )
        return below[id(schema)]

    visit(contents, scope, "", name, 0, False)
    if len(found) == 2:
        raise SchemaError(
            f"{found['unevaluatedProperties']}: unevaluatedProperties in a schema with patternProperties "
            f"({found['patternProperties']}) is not supported: jsonschema would match those patterns "
            "without a time limit"
        )
