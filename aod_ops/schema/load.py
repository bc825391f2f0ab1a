"""Load a JSON Schema, check it against its draft's meta-schema, and make its ``$ref`` resolvable.

``load_schema`` accepts a file path or a dict. The draft comes from ``$schema`` (draft 4, 6, 7,
2019-09, 2020-12; 2020-12 when undeclared). References resolve through a ``referencing``
registry: local pointers and anchors, the standard meta-schemas, and other schema files next to
the schema (read from disk once, at load time). Every problem is a ``SchemaError`` whose message
names the file and, where there is one, the JSON pointer of the offending keyword.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator
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

from aod_ops.errors import SchemaError

# Normalised $schema URI (no scheme, no trailing '#' or '/') -> (name, validator, specification).
_DRAFTS: dict[str, tuple[str, type[Validator], Specification[Any]]] = {
    "json-schema.org/draft-04/schema": ("draft4", jsonschema.Draft4Validator, referencing.jsonschema.DRAFT4),
    "json-schema.org/draft-06/schema": ("draft6", jsonschema.Draft6Validator, referencing.jsonschema.DRAFT6),
    "json-schema.org/draft-07/schema": ("draft7", jsonschema.Draft7Validator, referencing.jsonschema.DRAFT7),
    "json-schema.org/draft/2019-09/schema": (
        "draft2019-09",
        jsonschema.Draft201909Validator,
        referencing.jsonschema.DRAFT201909,
    ),
    "json-schema.org/draft/2020-12/schema": (
        "draft2020-12",
        jsonschema.Draft202012Validator,
        referencing.jsonschema.DRAFT202012,
    ),
}
_BY_NAME = {name: (cls, spec) for name, cls, spec in _DRAFTS.values()}
_DEFAULT_DRAFT = "json-schema.org/draft/2020-12/schema"

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
    offending instance value itself.
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
        """The ``jsonschema`` validator class of this schema's draft."""
        return _BY_NAME[self.draft][0]

    @property
    def specification(self) -> Specification[Any]:
        """The ``referencing`` specification of this schema's draft."""
        return _BY_NAME[self.draft][1]

    def validator(self) -> Validator:
        """A validator for this schema (format checking on), built once and cached."""
        if "validator" not in self._memo:
            cls = self.validator_class
            self._memo["validator"] = cls(
                self.contents, registry=self.registry, format_checker=cls.FORMAT_CHECKER
            )
        validator: Validator = self._memo["validator"]
        return validator

    def errors(self, instance: Any) -> list[ValidationIssue]:
        """Every way ``instance`` breaks the schema, most specific error first per location.

        An ``anyOf``/``oneOf`` failure is reported through its most relevant sub-error
        (``jsonschema.exceptions.best_match``), which names the real culprit.
        """
        issues = []
        try:
            errors = list(self.validator().iter_errors(instance))
        except Exception as crash:
            # jsonschema itself fails on some malformed schemas (a non-string "id" it walks
            # into): the record cannot be shown valid, so it is reported invalid, not a crash.
            message = f"the validator cannot check this value against the schema: {crash!r}"
            return [ValidationIssue(pointer="", message=message, keyword="schema", value=instance)]
        for error in errors:
            best = best_match([error]) or error
            issues.append(
                ValidationIssue(
                    pointer=json_pointer(best.absolute_path),
                    message=best.message,
                    keyword=str(best.validator),
                    value=best.instance,
                )
            )
        return sorted(issues, key=lambda issue: issue.pointer)


def json_pointer(parts: Iterable[str | int]) -> str:
    """The JSON pointer (RFC 6901) for a sequence of keys and indexes; "" for the root."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def load_schema(source: str | Path | dict[str, Any]) -> LoadedSchema:
    """Read, check and prepare a JSON Schema from a file path or a dict.

    Raises ``SchemaError`` for an unreadable file, invalid JSON (with line and column), an
    unknown ``$schema``, a schema that breaks its meta-schema (with the JSON pointer of the bad
    keyword), or a ``$ref`` that cannot be resolved (with the pointer of the ``$ref``).
    """
    if isinstance(source, dict):
        name, path, contents = "<dict>", None, source
    else:
        path = Path(source)
        name = str(source)
        contents = _read_json(path)
    if isinstance(contents, bool):
        # The boolean schemas: true accepts everything, false nothing.
        contents = {} if contents else {"not": {}}
    if not isinstance(contents, dict):
        kind = type(contents).__name__
        raise SchemaError(f"{name}: a JSON Schema must be an object or a boolean, not {kind}")
    draft, cls, spec = _draft(contents, name)
    _check_against_meta_schema(contents, cls, name)

    file_uri = path.resolve().as_uri() if path is not None else ""
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


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise SchemaError(f"{path}: cannot read schema: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SchemaError(
            f"{path}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None


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


_META_VALIDATORS: dict[str, Validator] = {}


def _check_against_meta_schema(contents: Any, cls: type[Validator], name: str) -> None:
    meta = _META_VALIDATORS.get(cls.__name__)
    if meta is None:
        meta = _META_VALIDATORS[cls.__name__] = cls(cls.META_SCHEMA, format_checker=cls.FORMAT_CHECKER)
    with warnings.catch_warnings():
        # Python's re warns about syntax that may change meaning later; the pattern still compiles.
        warnings.simplefilter("ignore", FutureWarning)
        error: ValidationError | None = best_match(meta.iter_errors(contents))
    if error is not None:
        pointer = json_pointer(error.absolute_path)
        where = f"at {pointer}" if pointer else "at the root"
        raise SchemaError(f"{name}: invalid schema {where}: {error.message}")


def _retriever(
    path: Path | None, base_uri: str, spec: Specification[Any], cache: dict[str, Resource[Any]]
) -> Callable[[str], Resource[Any]]:
    """Retrieve referenced documents from disk only: schema files next to the schema."""
    root_dir = path.resolve().parent if path is not None else None

    def local_file(uri: str) -> Path | None:
        parts = urlsplit(uri)
        if parts.scheme == "file":
            return Path(unquote(parts.path))
        if root_dir is None:
            return None
        if not parts.scheme:
            return root_dir / unquote(parts.path)
        # An absolute $id (https://example.com/schemas/a.json) names files by their path under
        # the $id's folder; the same relative path is looked up next to the schema file.
        folder = urljoin(base_uri, ".")
        if uri.startswith(folder) and folder.split("://", 1)[0] in {"http", "https"}:
            return root_dir / unquote(uri[len(folder) :])
        return None

    def retrieve(uri: str) -> Resource[Any]:
        if uri in cache:
            return cache[uri]
        file = local_file(uri)
        if file is None or not file.is_file():
            raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]
        contents = _read_json(file)
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
    """Resolve every ``$ref`` reachable in the schema and the documents it references, once each."""
    seen: set[int] = set()
    # (schema, scope, pointer, document name, whether the scope still has to enter the schema)
    stack: list[tuple[Any, Scope, str, str, bool]] = [(contents, scope, "", name, False)]
    while stack:
        schema, here, pointer, where, enter = stack.pop()
        if not isinstance(schema, dict):
            continue
        if enter:
            here = here.enter(schema)
        for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
            ref = schema.get(keyword)
            if not isinstance(ref, str):
                continue
            target, there, uri = here.follow(ref, f"{where}: {keyword} at {pointer or '/'}")
            # Targets are keyed by identity: the registry hands out the same object every time.
            if id(target) not in seen:
                seen.add(id(target))
                document, fragment = urldefrag(uri)
                stack.append((target, there, fragment, name if document == scope.base else document, False))
        for parts, subschema in _subschemas(schema):
            stack.append((subschema, here, pointer + json_pointer(parts), where, True))
