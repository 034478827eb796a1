"""The file system Tune writes its experiment state through: a local folder where every file is
replaced atomically.

Tune saves its state (`experiment_state-*.json`, the searcher's and callbacks' pickles) into a
staging folder, then copies it onto the sweep's storage with `pyarrow.fs.copy_files`, which
writes each file in place. A disk that fills during that copy left `experiment_state-*.json`
at 0 bytes: the sweep could not be restored. Through this file system each file Tune writes goes
to a hidden temporary beside it and is renamed over the old one only once it is whole, so a
failed save keeps the previous state. (A bucket publishes an object only when its upload
completes: it needs no such wrapper.)
"""

from __future__ import annotations

import contextlib
import os
import uuid

import pyarrow as pa
import pyarrow.fs as pafs


def tune_filesystem(fs: pafs.FileSystem) -> pafs.FileSystem:
    """What to give Tune for the storage's `fs`: atomic writes on a local (or NFS) folder."""
    return pafs.PyFileSystem(AtomicLocalHandler()) if isinstance(fs, pafs.LocalFileSystem) else fs


class _AtomicFile:
    """A file written under a temporary name and renamed into place on a clean close; a write
    that failed (a full disk) leaves the file as it was."""

    def __init__(self, path: str):
        self.path = path
        self.tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.partial")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # as LocalFileSystem's copy does
        self._f = open(self.tmp, "wb")  # noqa: SIM115 (closed in close())
        self.failed = False
        self.closed = False

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except BaseException:
            self._fail()
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except BaseException:
            self._fail()
            raise

    def _fail(self) -> None:
        """Drop the temporary now: pyarrow may not close a stream whose write failed."""
        self.failed = True
        self.close()

    def tell(self) -> int:
        return self._f.tell()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if not self.failed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
                os.replace(self.tmp, self.path)
        finally:
            with contextlib.suppress(OSError):  # a close that failed on a full disk too
                self._f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


class AtomicLocalHandler(pafs.FileSystemHandler):
    """`pyarrow.fs.LocalFileSystem`, with `open_output_stream` writing through `_AtomicFile`."""

    def __init__(self):
        self._fs = pafs.LocalFileSystem()

    def __reduce__(self):  # Tune pickles its storage's file system to every trial
        return (AtomicLocalHandler, ())

    def __eq__(self, other):
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(AtomicLocalHandler)

    def get_type_name(self):
        return "undistill-atomic-local"

    def normalize_path(self, path):
        return self._fs.normalize_path(path)

    def get_file_info(self, paths):
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("undistill: refusing to empty the root folder")

    def delete_file(self, path):
        self._fs.delete_file(path)

    def move(self, src, dest):
        self._fs.move(src, dest)

    def copy_file(self, src, dest):
        with self._fs.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            while block := source.read(1 << 22):
                target.write(block)

    def open_input_stream(self, path):
        return self._fs.open_input_stream(path)

    def open_input_file(self, path):
        return self._fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return pa.PythonFile(_AtomicFile(path), mode="w")

    def open_append_stream(self, path, metadata):
        return self._fs.open_append_stream(path)  # appends (Tune's logs) cannot be made atomic
