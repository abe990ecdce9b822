"""Atomic output: write beside the destination, rename into place only on success.

A run that is interrupted (an exception, Ctrl-C) never leaves a file at the destination that looks
finished: everything is written to a *partial* path in the destination's folder, named
``.<stem>.semlens-partial-<pid><suffix>`` (the container extension is kept so that the muxer picks
the right format from the name), and moved onto the destination with :func:`os.replace` only when
the ``with`` block ends without an exception. A run killed hard (SIGKILL, power loss) may leave a
partial behind; :func:`remove_stale_partials` finds and removes those whose process is gone.

The input is never overwritten: :func:`check_output_path` refuses an output that is the input
(same resolved path, or the same file through a link).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError, OutputExistsError

__all__ = [
    "PARTIAL_MARKER",
    "atomic_output",
    "check_output_path",
    "find_partials",
    "partial_path",
    "remove_stale_partials",
]

PARTIAL_MARKER = ".semlens-partial"

PathLike = str | os.PathLike[str]

# ".<stem>.semlens-partial-<pid>[.<token>]<suffix>"
_PARTIAL_RE = re.compile(
    r"^\.(?P<stem>.*)" + re.escape(PARTIAL_MARKER) + r"-(?P<pid>\d+)(?:\.[0-9a-f]{6})?(?P<suffix>\.[^.]*)?$"
)


def partial_path(dest: PathLike, *, pid: int | None = None, token: str | None = None) -> Path:
    """The temporary path used while writing ``dest``.

    ``movie.mp4`` -> ``.movie.semlens-partial-<pid>.<token>.mp4`` in the same folder (the
    extension is kept last so that FFmpeg still recognises the container); a folder ``frames`` ->
    ``.frames.semlens-partial-<pid>.<token>``. ``token`` (6 hex digits) keeps two writers of the
    same process apart; it is random when not given.
    """
    dest = Path(dest)
    pid = os.getpid() if pid is None else pid
    token = os.urandom(3).hex() if token is None else token
    return dest.with_name(f".{dest.stem}{PARTIAL_MARKER}-{pid}.{token}{dest.suffix}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
    except OSError:
        pass
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(
    dest: PathLike, *, source: PathLike | None = None, overwrite: bool = False, is_dir: bool | None = None
) -> Path:
    """Check, before any work is done, that ``dest`` may be written; return it as a :class:`Path`.

    Raises :class:`OutputError` when ``dest`` is the input ``source`` (same resolved path or same
    file via :func:`os.path.samefile`), or when ``dest`` exists as a different kind (a folder where
    a file goes, given ``is_dir``); :class:`OutputExistsError` when ``dest`` exists and
    ``overwrite`` is false.
    """
    dest = Path(dest)
    if dest.name in ("", ".", ".."):
        raise OutputError(f"output {str(dest)!r} names no file or folder of its own; give a path such as out.mp4")
    if source is not None and _same_file(dest, Path(source)):
        raise OutputError(
            f"output {str(dest)!r} is the input; choose a different output path (the input is never overwritten)"
        )
    try:
        exists = dest.exists() or dest.is_symlink()
    except OSError as exc:
        raise OutputError(
            f"cannot access output {str(dest)!r} ({exc.strerror or exc}); choose another output path"
        ) from exc
    if exists and is_dir is not None and dest.is_dir() != is_dir:
        kind = "a folder" if dest.is_dir() else "a file"
        raise OutputError(f"output {str(dest)!r} exists and is {kind}; choose another output path")
    if exists:
        if not overwrite:
            raise OutputExistsError(
                f"output {str(dest)!r} already exists; pass overwrite=True (--overwrite) to replace it or choose another path"
            )
        if dest.is_dir() and not dest.is_symlink():
            _check_replaceable_folder(dest, source)
    return dest


#: The names of the files semlens writes into a folder of frames (``frame_000001.png``, ...).
_FRAME_FILE_RE = re.compile(r"^frame_\d{6,}\.png$")


def _check_replaceable_folder(dest: Path, source: PathLike | None) -> None:
    """Refuse to replace folder ``dest`` unless it is a folder of frames semlens wrote: only
    ``frame_NNNNNN.png`` files, and not holding the input. Replacing a folder replaces all of it,
    so a folder with anything else in it (the user's files, the input video) is never replaced."""
    if source is not None:
        try:
            inside = Path(source).resolve().is_relative_to(dest.resolve())
        except OSError:
            inside = False
        if inside:
            raise OutputError(
                f"output folder {str(dest)!r} holds the input; choose a different output path (the input is never overwritten)"
            )
    try:
        entries = sorted(os.scandir(dest), key=lambda e: e.name)
    except OSError as exc:
        raise OutputError(f"cannot read output folder {str(dest)!r} ({exc.strerror or exc}); choose another output path") from exc
    foreign = [e.name for e in entries
               if not (_FRAME_FILE_RE.match(e.name) and e.is_file(follow_symlinks=False))]
    if foreign:
        raise OutputError(
            f"output folder {str(dest)!r} holds files semlens did not write (such as {foreign[0]!r}); "
            f"overwrite=True replaces only a folder of frames: choose another output path"
        )


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def _missing_parents(dest: Path) -> list[Path]:
    """The folders above ``dest`` that do not exist yet, deepest first."""
    missing = []
    for folder in dest.parents:
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def _remove_created(folders: list[Path]) -> None:
    """Remove the folders a failed run created (deepest first), each only while it is empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer uses it), or already gone
            return


def _prepare_parent(dest: Path) -> None:
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise OutputError(
            f"cannot create output folder {str(parent)!r} (permission denied); choose a writable output folder"
        ) from exc
    except OSError as exc:
        raise OutputError(
            f"cannot create output folder {str(parent)!r} ({exc.strerror or exc}); choose another output folder"
        ) from exc
    if not parent.is_dir():
        raise OutputError(f"output folder {str(parent)!r} is not a folder; choose another output path")


@contextlib.contextmanager
def atomic_output(
    dest: PathLike,
    overwrite: bool = False,
    *,
    source: PathLike | None = None,
    is_dir: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it onto ``dest`` only if the block succeeds.

    ``is_dir=False`` (a file, e.g. a video): the temporary path is reserved as an empty file that
    the writer may overwrite (``av.open(tmp, "w")``). ``is_dir=True`` (an image-sequence folder):
    the temporary path is an empty, existing folder.

    On any exception, including :class:`KeyboardInterrupt`, the temporary file or folder is removed
    and the exception propagates; ``dest`` is left untouched. Missing parent folders are created,
    and removed again on an exception (only those this call created, and only while empty). Errors:
    :class:`OutputError` (read-only or unusable folder, ``dest`` is ``source``, nothing written),
    :class:`OutputExistsError` (``dest`` exists and ``overwrite`` is false; checked again before the
    final rename, so a file that appeared meanwhile is not clobbered).
    """
    dest = check_output_path(dest, source=source, overwrite=overwrite, is_dir=is_dir)
    created = _missing_parents(dest)
    tmp = partial_path(dest)
    try:
        _prepare_parent(dest)
        try:
            if is_dir:
                tmp.mkdir()
            else:
                with open(tmp, "xb"):
                    pass
        except PermissionError as exc:
            raise OutputError(
                f"cannot write in output folder {str(dest.parent)!r} (permission denied); choose a writable output folder"
            ) from exc
        except OSError as exc:
            raise OutputError(
                f"cannot write in output folder {str(dest.parent)!r} ({exc.strerror or exc}); choose another output folder"
            ) from exc
    except BaseException:
        _remove_created(created)
        raise

    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written for {str(dest)!r}; the temporary output disappeared")
        _commit(tmp, dest, overwrite=overwrite, is_dir=is_dir)
    except OutputError as exc:
        _remove(tmp)
        _remove_created(created)
        # The user knows the output by its name, not by the hidden temporary file it was written as.
        text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else None
        if text is not None and str(tmp) in text:
            raise type(exc)(text.replace(str(tmp), str(dest))) from exc
        raise
    except BaseException:
        _remove(tmp)
        _remove_created(created)
        raise


def _commit(tmp: Path, dest: Path, *, overwrite: bool, is_dir: bool) -> None:
    exists = dest.exists() or dest.is_symlink()
    if exists and not overwrite:
        raise OutputExistsError(
            f"output {str(dest)!r} appeared while writing; pass overwrite=True (--overwrite) to replace it"
        )
    if exists and dest.is_dir() and not dest.is_symlink():
        _check_replaceable_folder(dest, None)  # again: files may have been added while writing
    try:
        if exists and (is_dir or dest.is_dir()) and not dest.is_symlink():
            # os.replace cannot replace a non-empty folder: move the old one aside first.
            trash = partial_path(dest)
            os.replace(dest, trash)
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(trash, dest)
                raise
            _remove(trash)
        else:
            os.replace(tmp, dest)
    except OSError as exc:
        raise OutputError(
            f"cannot move the finished output to {str(dest)!r} ({exc.strerror or exc})"
        ) from exc


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def find_partials(dest: PathLike) -> list[Path]:
    """Partial files/folders that writing ``dest`` (by any process) may have left in its folder.

    If ``dest`` is an existing folder that is not itself an output, use
    :func:`remove_stale_partials` with ``folder=`` to scan it instead.
    """
    dest = Path(dest)
    parent = dest.parent
    if not parent.is_dir():
        return []
    found = []
    for entry in parent.iterdir():
        m = _PARTIAL_RE.match(entry.name)
        if m and m.group("stem") == dest.stem and (m.group("suffix") or "") == dest.suffix:
            found.append(entry)
    return sorted(found)


def remove_stale_partials(
    dest: PathLike | None = None,
    *,
    folder: PathLike | None = None,
    min_age: float = 0.0,
    include_live: bool = False,
) -> list[Path]:
    """Remove partial outputs left by killed runs; return the removed paths.

    Give ``dest`` (an output path: only its partials are considered) or ``folder`` (every partial
    in that folder). A partial is *stale* when the process id in its name is no longer running
    (or ``include_live=True``) and it is at least ``min_age`` seconds old; partials of live runs,
    including this process's own, are kept.
    """
    if (dest is None) == (folder is None):
        raise ValueError("give exactly one of dest or folder")
    if dest is not None:
        candidates = find_partials(dest)
    else:
        base = Path(folder)  # type: ignore[arg-type]
        candidates = sorted(e for e in base.iterdir() if _PARTIAL_RE.match(e.name)) if base.is_dir() else []
    removed = []
    now = time.time()
    for path in candidates:
        m = _PARTIAL_RE.match(path.name)
        if m is None:
            continue
        if not include_live and _pid_alive(int(m.group("pid"))):
            continue
        try:
            age = now - path.lstat().st_mtime
        except OSError:
            continue
        if age < min_age:
            continue
        _remove(path)
        if not path.exists():
            removed.append(path)
    return removed
