"""The package's own exception types.

``AodError`` and its subclasses are *user* errors: the CLI prints their message on one line and
exits non-zero without a traceback. Each message says what is wrong and where (file, partition,
schema path or field).
"""


class AodError(Exception):
    """A problem with the user's input or environment that the user can fix."""


class SchemaError(AodError):
    """A JSON Schema that cannot be read, is invalid for its draft, or has a broken ``$ref``."""


class SpecError(AodError):
    """A partition spec that is unreadable or has a missing or wrong field."""


class ModelError(AodError):
    """A model that cannot be found, loaded or reached."""


class DataError(AodError):
    """A reference sample or output dataset that is missing, corrupt or malformed."""
