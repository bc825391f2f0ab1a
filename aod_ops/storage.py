"""Every input and output by location: a local path or any URI an fsspec filesystem opens.

A location is a plain path (``out``, ``/data/cars.csv``), a ``file://`` URI, or a URI of an
object store or other filesystem (``s3://bucket/prefix``, ``gs://...``, ``az://...``,
``memory://...``: every scheme fsspec knows, once its package is installed, e.g. ``s3fs`` for
S3). ``locate`` parses one: a local location becomes an absolute ``Path``, so local code keeps
working on paths, and any other stays a URI string. All reading, writing and listing of inputs
and outputs goes through this module.

Credentials never come from a spec or a URI: each filesystem finds its own, the way its SDK
does. For S3, botocore reads ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` (an S3-compatible store
such as MinIO), or ``~/.aws`` and the instance's role; for GCS, ``GOOGLE_APPLICATION_CREDENTIALS``.
An Airflow task gets them from a connection (``aod_ops.airflow.hooks.storage_environment``).

Failures are ``OSError``s, as for local files (a filesystem's own exceptions, such as botocore's
for missing credentials or an unreachable endpoint, are turned into one); a scheme that no
filesystem handles is a ``StorageError`` naming it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from aod_ops.errors import DataError

Location = Path | str
"""A local file or folder (an absolute ``Path``) or a remote one (a URI such as ``s3://b/k``)."""

_LOCAL = frozenset({"file", "local"})


class StorageError(DataError):
    """A location no filesystem opens: an unknown scheme, or one whose package is missing."""


def locate(location: str | Path, base: Location | None = None) -> Location:
    """``location`` as an absolute local ``Path`` or a remote URI.

    A relative path is taken relative to ``base`` (a folder, local or remote) when given, else
    to the working directory.

    :raises StorageError: for a scheme no filesystem handles, naming it.
    """
    text = str(location)
    protocol = fsspec.utils.get_protocol(text)
    if protocol in _LOCAL:
        path = Path(text.split("://", 1)[1] if "://" in text else text)
        if not path.is_absolute() and base is not None:
            return locate(join(base, str(path)))
        return path.resolve()
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise StorageError(
            f"{text}: unknown scheme {protocol!r} (use a local path, file://, s3://, gs://, or another "
            "scheme fsspec knows)"
        ) from None
    except ImportError as exc:
        raise StorageError(f"{text}: scheme {protocol!r} needs a package that is missing: {exc}") from None
    scheme, rest = text.split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest).lstrip('/')}"  # "a/../b" is "b", as in a path


def is_remote(location: Location) -> bool:
    """Whether ``location`` is outside the local filesystem (a URI)."""
    return not isinstance(location, Path)


def join(base: Location, *parts: str) -> Location:
    """``base`` with the relative ``parts`` appended (``join("s3://b/out", "cars")``)."""
    if isinstance(base, Path):
        return base.joinpath(*parts)
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def name(location: Location) -> str:
    """The last part of ``location``: a file's or a folder's name."""
    return location.name if isinstance(location, Path) else location.rstrip("/").rsplit("/", 1)[-1]


def suffix(location: Location) -> str:
    """The file name's extension in lower case (``.csv``), or ``""``."""
    return PurePosixPath(name(location)).suffix.lower()


def parent(location: Location) -> Location:
    """The folder holding ``location``."""
    return location.parent if isinstance(location, Path) else location.rstrip("/").rsplit("/", 1)[0]


def uri(location: Location) -> str:
    """``location`` as a URI (``file:///...`` for a local one), for XCom and assets."""
    return location.as_uri() if isinstance(location, Path) else location


def filesystem(location: Location) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of ``location`` and the path it knows the location by."""
    if isinstance(location, Path):
        return LocalFileSystem(), str(location)
    return fsspec.core.url_to_fs(location)


@contextlib.contextmanager
def _io(location: Location) -> Iterator[None]:
    """Turn a filesystem's own exception (botocore's, for one) into an ``OSError``."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:  # each filesystem has its own types; callers handle OSError
        raise OSError(f"{uri(location)}: {type(exc).__name__}: {exc}") from exc


def open_file(location: Location, mode: str = "rb", **text: Any) -> IO[Any]:
    """``location`` opened for reading (``"rb"``, or ``"r"`` with ``encoding``/``newline``)."""
    fs, path = _fresh(location)
    with _io(location):
        return fs.open(path, mode, **text)


def read_bytes(location: Location, limit: int | None = None) -> bytes:
    """The bytes of a file, or only its first ``limit`` bytes, in one request: a file replaced
    meanwhile (a manifest) is read whole, old or new."""
    fs, path = _fresh(location)
    with _io(location):
        return bytes(fs.cat_file(path, start=None if limit is None else 0, end=limit))


def read_text(location: Location) -> str:
    """The UTF-8 text of a file (``UnicodeDecodeError`` when it is not UTF-8)."""
    return read_bytes(location).decode("utf-8")


def write_bytes(location: Location, data: bytes) -> None:
    """Write a whole file at once: a reader sees the old file or the new one, never a part.

    Locally the bytes go to a temporary file that is renamed into place (parent folders are
    made); an object store makes an object visible only once its upload is complete.
    """
    if isinstance(location, Path):
        location.parent.mkdir(parents=True, exist_ok=True)
        tmp = location.with_name(f".{location.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, location)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    fs, path = filesystem(location)
    with _io(location):
        fs.pipe_file(path, data)


def write_text(location: Location, text: str) -> None:
    """Write a whole UTF-8 text file at once (see ``write_bytes``)."""
    write_bytes(location, text.encode("utf-8"))


def size(location: Location) -> int:
    """The size of a file in bytes."""
    fs, path = _fresh(location)
    with _io(location):
        return int(fs.size(path))


def exists(location: Location) -> bool:
    """Whether a file or a (non-empty, on an object store) folder is at ``location``."""
    fs, path = _fresh(location)
    with _io(location):
        return bool(fs.exists(path))


def is_file(location: Location) -> bool:
    """Whether a file is at ``location``."""
    fs, path = _fresh(location)
    with _io(location):
        return bool(fs.isfile(path))


def is_dir(location: Location) -> bool:
    """Whether a folder is at ``location`` (on an object store: whether objects lie under it)."""
    fs, path = _fresh(location)
    with _io(location):
        return bool(fs.isdir(path))


def list_files(folder: Location, suffix: str = "") -> list[Location]:
    """The files directly in ``folder`` whose names end with ``suffix``, sorted; none when the
    folder is missing."""
    return [entry for entry, is_folder in _entries(folder) if not is_folder and name(entry).endswith(suffix)]


def list_folders(folder: Location) -> list[Location]:
    """The folders directly in ``folder``, sorted; none when the folder is missing."""
    return [entry for entry, is_folder in _entries(folder) if is_folder]


def remove(location: Location) -> None:
    """Delete a file, or a folder and everything in it; nothing when it is not there."""
    if isinstance(location, Path):
        if location.is_dir():
            shutil.rmtree(location, ignore_errors=True)
        else:
            location.unlink(missing_ok=True)
        return
    fs, path = _fresh(location)
    with _io(location):
        if fs.exists(path):
            fs.rm(path, recursive=True)


def check_writable(folder: Location) -> None:
    """Write and delete an empty file in ``folder`` (made when local and missing), so that missing
    credentials, a missing bucket or a read-only store fail before any work, not after it."""
    probe = join(folder, f".aod-probe-{uuid.uuid4().hex[:12]}")
    write_bytes(probe, b"")
    remove(probe)


@contextlib.contextmanager
def staged(folder: Location) -> Iterator[Path]:
    """A local folder for files that a library writes to local paths (plots, GX Data Docs).

    For a local ``folder`` it is the folder itself (made if needed); for a remote one, a
    temporary folder whose files are uploaded into ``folder`` when the block ends without error.
    """
    if isinstance(folder, Path):
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="aod-staged-") as tmp:
        yield Path(tmp)
        for file in sorted(Path(tmp).rglob("*")):
            if file.is_file():
                write_bytes(join(folder, *file.relative_to(tmp).parts), file.read_bytes())


def _fresh(location: Location) -> tuple[AbstractFileSystem, str]:
    """The filesystem and path with no cached listing: another process may have written since."""
    fs, path = filesystem(location)
    fs.invalidate_cache(path)
    return fs, path


def _entries(folder: Location) -> list[tuple[Location, bool]]:
    """Each entry directly in ``folder`` with whether it is a folder, sorted by name."""
    fs, path = _fresh(folder)
    with _io(folder):
        if not fs.isdir(path):
            return []
        found = fs.ls(path, detail=True)
    entries = [(join(folder, PurePosixPath(e["name"]).name), e["type"] == "directory") for e in found]
    # An object store may list the folder itself among its entries.
    return sorted((entry for entry in entries if entry[0] != folder), key=lambda entry: name(entry[0]))
