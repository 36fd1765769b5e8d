"""Crash-safe file writing: write to a hidden temp file, fsync, then rename into place.

A reader never sees a half-written file, and a failed write (exception, full disk,
Ctrl-C) leaves the previous file untouched and no temp file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from napari_cryoseg.core.errors import InputError, OutputExistsError

__all__ = ["atomic_write", "check_output_path", "is_inside", "refuse_special_file",
           "unique_path"]

#: errno values meaning "the disk (or the quota) is full".
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: Longest part of the target's name reused in the temp file's name (names max 255 bytes).
_MAX_TMP_STEM = 80
_MAX_UNIQUE_TRIES = 10_000


def refuse_special_file(path: Path, flag: str = "output") -> None:
    """Refuse a FIFO, device or socket at ``path`` (or behind a link there): writing
    "over" one would replace the node (``/dev/null`` for everyone) or block forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing (or a dangling link): a new file is created
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device")
        raise InputError(f"{flag} '{path}' is {kind}, not a regular file; cryoseg never "
                         "replaces one, not even with --overwrite. Choose a file name")


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return path.absolute()


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies inside it (links resolved)."""
    real, root = _real(path), _real(folder)
    return real == root or root in real.parents


def _same(a: Path, b: Path) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return _real(a) == _real(b)


def check_output_path(
    out: str | os.PathLike[str],
    inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
    *,
    flag: str = "--out",
    overwrite: bool = False,
    is_ours: Callable[[Path], bool] | None = None,
    what: str = "output",
) -> Path:
    """The one rule for every output a command writes, checked before any work.

    * ``out`` is never one of the inputs (links resolved, ``os.path.samefile`` where
      both exist), never inside a folder the command reads from, and, for an output
      folder, no input lies inside it;
    * a FIFO, device or socket is never replaced, not even with ``overwrite``;
    * an existing ``out`` is replaced only with ``overwrite``, and then only when
      ``is_ours(out)`` says cryoseg wrote it (a label TIFF with our header, a model
      file, a package with our description...); ``is_ours=None`` accepts any file.

    Raises
    ------
    InputError
        One line naming the flag and what to do (:class:`OutputExistsError` when ``out``
        exists and ``overwrite`` is False).
    """
    path = Path(out).expanduser()
    sources = [(f, Path(item).expanduser()) for f, item in inputs if item is not None]
    for input_flag, source in sources:  # the same file first: the plainest message
        if _same(path, source):
            raise InputError(f"{flag} {path} is the {input_flag} input; writing it would "
                             f"destroy the input, even with --overwrite. Choose another {flag}")
    for input_flag, source in sources:
        if source.is_dir() and is_inside(path, source):
            relation = f"lies inside the {input_flag} input folder {source}"
        elif path.is_dir() and is_inside(source, path):
            relation = f"holds the {input_flag} input {source}"
        else:
            continue
        raise InputError(f"{flag} {path} {relation}; writing it could destroy the input, "
                         f"even with --overwrite. Choose another {flag}")
    refuse_special_file(path, flag)
    if os.path.lexists(path):
        if not overwrite:
            raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it "
                                    f"(or choose another {flag})")
        if is_ours is not None and not is_ours(path):
            raise InputError(
                f"{path} exists and is not a napari-cryoseg {what}; --overwrite only "
                f"replaces what cryoseg wrote. Move it away or choose another {flag}")
    return path


def _check_target(path: Path, overwrite: bool) -> None:
    """Raise :class:`InputError` when ``path`` cannot (or must not) be written."""
    refuse_special_file(path)
    parent = path.parent
    if not parent.exists():
        raise InputError(
            f"output folder '{parent}' does not exist; create it first or choose another folder"
        )
    if not parent.is_dir():
        raise InputError(f"'{parent}' is not a folder; choose an existing output folder")
    if path.is_dir():
        raise InputError(f"'{path}' is a folder; give a file name to write to")
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"'{path}' already exists; pass --overwrite (or choose another name)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            f"output folder '{parent}' is not writable; choose another folder "
            "or fix its permissions"
        )


def _create_temp(path: Path) -> tuple[BinaryIO, Path]:
    """Create ``.<name>.<random>.tmp`` next to ``path``; return it opened ``"w+b"``."""
    stem = path.name[:_MAX_TMP_STEM]
    for _ in range(100):
        tmp = path.with_name(f".{stem}.{secrets.token_hex(4)}.tmp")
        try:
            # "x": create exclusively; permissions 0o666 minus the umask, like any new file.
            # Opened by name so that `fileobj.name` is the path (tifffile needs it).
            return open(tmp, "x+b"), tmp  # closed by atomic_write
        except FileExistsError:
            continue
        except PermissionError as err:
            raise InputError(
                f"output folder '{path.parent}' is not writable; choose another folder "
                "or fix its permissions"
            ) from err
    raise InputError(f"could not create a temporary file in '{path.parent}'")  # pragma: no cover


def _fsync_dir(folder: Path) -> None:
    """Best effort: persist the rename itself (POSIX only; a no-op elsewhere)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename ``tmp`` onto ``path``; without ``overwrite`` never replace an existing file."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        # A hard link fails atomically if `path` appeared meanwhile (no check-then-act race).
        os.link(tmp, path)
    except FileExistsError as err:
        raise OutputExistsError(
            f"'{path}' already exists; pass --overwrite (or choose another name)"
        ) from err
    except (OSError, NotImplementedError):
        # File systems without hard links (FAT, some network shares): check, then rename.
        if path.exists():
            raise OutputExistsError(
                f"'{path}' already exists; pass --overwrite (or choose another name)"
            ) from None
        os.replace(tmp, path)
    else:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write(
    path: str | os.PathLike[str],
    write_fn: Callable[[BinaryIO], object],
    *,
    overwrite: bool,
) -> Path:
    """Write a file atomically.

    ``write_fn`` receives a binary file object (read/write, seekable) of a hidden
    temp file ``.<name>.<random>.tmp`` in the destination folder and writes the whole
    content into it (for example ``lambda f: tifffile.imwrite(f, data)`` or
    ``lambda f: torch.save(obj, f)``). The temp file is then flushed, fsync'ed and
    renamed onto ``path`` with :func:`os.replace`.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    write_fn : callable
        ``write_fn(fileobj)``; its return value is ignored. It must not close the file.
    overwrite : bool
        Replace ``path`` if it exists. If False and ``path`` exists (even if it is created
        by someone else while ``write_fn`` runs), nothing is written.

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (an :class:`InputError` and a
        :class:`FileExistsError`).
    InputError
        The folder does not exist, is not a folder or is not writable, ``path`` is a
        folder, or the disk is full.
    Exception
        Whatever ``write_fn`` raises, unchanged (except "disk full", which becomes an
        :class:`InputError`). In every error case the temp file is
        removed and an existing ``path`` is left intact.
    """
    path = Path(path)
    _check_target(path, overwrite)
    fileobj, tmp = _create_temp(path)
    try:
        with fileobj:
            write_fn(fileobj)
            fileobj.flush()
            os.fsync(fileobj.fileno())
        try:
            _move_into_place(tmp, path, overwrite)
        except PermissionError as err:
            raise InputError(
                f"could not replace '{path}' (permission denied); if it is open in another "
                "program, close it, or choose another name"
            ) from err
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            raise InputError(
                f"not enough disk space to write '{path}'; free some space or choose another folder"
            ) from err
        raise
    _fsync_dir(path.parent)
    return path


def _split_suffix(name: str) -> tuple[str, str]:
    """Split ``name`` into stem and suffix, keeping ``.ome.tif(f)`` together."""
    lower = name.lower()
    for compound in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if lower.endswith(compound) and len(name) > len(compound):
            return name[: -len(compound)], name[-len(compound) :]
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix) if suffix else (name, "")


def unique_path(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it is free, else ``"<stem> (1)<suffix>"``, ``" (2)"``, ...

    Meant for GUI exports that must never overwrite. The check is not atomic; combine it
    with :func:`atomic_write` (``overwrite=False``), which refuses to replace a file
    created in the meantime.

    Parameters
    ----------
    path : str or os.PathLike
        Desired file path.

    Returns
    -------
    pathlib.Path
        A path that did not exist when checked, in the same folder.
    """
    path = Path(path)
    if not path.exists():
        return path
    stem, suffix = _split_suffix(path.name)
    for i in range(1, _MAX_UNIQUE_TRIES + 1):
        candidate = path.with_name(f"{stem} ({i}){suffix}")
        if not candidate.exists():
            return candidate
    raise InputError(
        f"could not find a free file name next to '{path}'; choose another name or folder"
    )
