"""Where a sweep's files live: a local or NFS folder, or an object store (`s3://`, `gs://`),
through `pyarrow.fs`. Every reader and writer of sweep files goes through `Storage`, so the same
code serves a laptop and a cluster whose nodes share a bucket.

Paths inside a storage are relative, `/`-joined strings. Writes are atomic for readers: a local
file is written to a hidden temporary, synced and renamed; an object store publishes an object
only when its upload completes. A `Storage` pickles as its location, so Ray can ship it to
workers, which open their own connection.
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

from .errors import ConfigError
from .files import atomic_write

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str | Path) -> bool:
    return bool(_URI.match(str(location)))


class Storage:
    """A root folder on a `pyarrow.fs` filesystem."""

    def __init__(self, location: str | Path):
        location = str(location)
        if is_uri(location) and not location.startswith("file://"):
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(location)
            except (ValueError, OSError) as exc:  # pyarrow.ArrowInvalid is a ValueError
                raise ConfigError(f"storage {location!r} cannot be opened ({exc}); use a folder, "
                                  "s3://bucket/path or gs://bucket/path") from None
            self.location = location
        else:
            local = Path(location.removeprefix("file://")).expanduser().resolve()
            self.fs, self.root, self.location = pafs.LocalFileSystem(), local.as_posix(), str(local)
        self.root = self.root.rstrip("/")

    def __reduce__(self):
        return (Storage, (self.location,))

    def __repr__(self) -> str:
        return f"Storage({self.location!r})"

    def __str__(self) -> str:
        return self.location

    @property
    def is_local(self) -> bool:
        """On this machine's file system (which may be an NFS mount shared by other nodes)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """The full path of `parts` inside the file system (no scheme): what pyarrow takes."""
        return "/".join([self.root, *(p.strip("/") for p in parts if p)])

    def uri(self, *parts: str) -> str:
        """`parts` as the user would type it: a local path, or the URI with its scheme."""
        if self.is_local:
            return self.path(*parts)
        scheme = self.location.split("://", 1)[0]
        return f"{scheme}://{self.path(*parts)}"

    def local_path(self, *parts: str) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.location} is not a local folder")
        return Path(self.path(*parts))

    # -- reading ------------------------------------------------------------------------------

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def size(self, *parts: str) -> int | None:
        info = self.fs.get_file_info(self.path(*parts))
        return info.size if info.type == pafs.FileType.File else None

    def read_bytes(self, *parts: str) -> bytes:
        """The file's bytes; FileNotFoundError when it is not there."""
        path = self.path(*parts)
        if self.is_local:
            return Path(path).read_bytes()
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except OSError as exc:
            if not self.exists(*parts):
                raise FileNotFoundError(self.uri(*parts)) from None
            raise exc

    def list(self, *parts: str, suffix: str = "", dirs: bool = False) -> list[str]:
        """Names (not paths) of the visible files (or folders) directly inside `parts`, sorted.
        Dot-names are hidden: they are temporaries of writes in progress."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        wanted = pafs.FileType.Directory if dirs else pafs.FileType.File
        return sorted(info.base_name for info in self.fs.get_file_info(selector)
                      if info.type == wanted and not info.base_name.startswith(".")
                      and info.base_name.endswith(suffix))

    def download(self, parts: tuple[str, ...], local: Path) -> None:
        """Copy a file to the local path `local`, atomically."""
        with self.fs.open_input_stream(self.path(*parts)) as src:
            atomic_write(local, lambda f: _copy(src, f))

    # -- writing ------------------------------------------------------------------------------

    def write_bytes(self, parts: tuple[str, ...] | str, data: bytes) -> None:
        self.write_with(parts, lambda f: f.write(data))

    def write_with(self, parts: tuple[str, ...] | str, write: Callable[[BinaryIO], None]) -> None:
        """Atomically create or replace a file, its bytes given by `write(file)`."""
        parts = (parts,) if isinstance(parts, str) else parts
        if self.is_local:
            atomic_write(self.local_path(*parts), write)
            return
        # Closing an object-store stream publishes what it holds, even after an exception: build
        # the bytes first, so a write that fails part-way publishes nothing.
        buffer = io.BytesIO()
        write(buffer)
        with self.fs.open_output_stream(self.path(*parts)) as f:
            f.write(buffer.getvalue())

    def upload(self, local: Path, *parts: str) -> None:
        """Copy a complete local file up (streamed: it may be large)."""
        if self.is_local:
            with open(local, "rb") as src:
                self.write_with(parts, lambda f: _copy(src, f))
            return
        with open(local, "rb") as src, self.fs.open_output_stream(self.path(*parts)) as f:
            _copy(src, f)

    def delete(self, *parts: str) -> None:
        with contextlib.suppress(OSError):  # FileNotFoundError is one
            self.fs.delete_file(self.path(*parts))

    def delete_dir(self, *parts: str) -> None:
        with contextlib.suppress(OSError):
            self.fs.delete_dir(self.path(*parts))

    def make_dirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def check_writable(self) -> None:
        """A ConfigError now rather than a failed write after hours of training."""
        probe = f".write-probe-{uuid.uuid4().hex}"
        try:
            self.make_dirs()
            self.write_bytes(probe, b"")
            self.delete(probe)
        except OSError as exc:
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise ConfigError(f"storage {self.location!r} is not writable ({reason}); pass "
                              "--storage DIR or a bucket URI you can write to") from None


def _copy(src, dst, chunk: int = 1 << 22) -> None:
    while True:
        block = src.read(chunk)
        if not block:
            return
        dst.write(block)
