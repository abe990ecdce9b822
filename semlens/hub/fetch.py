"""Fetching files from the Hugging Face Hub into its cache, verified.

Environment is read at call time, not import time (huggingface_hub reads some of it once, when it
is imported): ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, and the cache location (``HF_HUB_CACHE``,
``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``). The cache layout is huggingface_hub's
own (``models--user--repo/{blobs,snapshots,refs}``), so files are shared with other tools.

Rules:

- a pinned file (known sha256 or a 40-hex commit) is served from the cache without any network
  access when it is there; an unpinned one (a branch of a user's repo) is checked with the Hub when
  online and falls back to the cache when the Hub cannot be reached;
- every file is checked after a download and when taken from the cache (once per process and
  file): against the sha256 (and size) pinned by the caller when there is one, else against the id
  the Hub reports for it (its ``ETag``: the sha256 of an LFS file, the git blob id of a regular
  file; a file the Hub gives no such id for is refused); a cached file without a pinned sha256 is
  checked against the id it was stored under (the cache names blobs by that ``ETag``). A file that
  fails is deleted from the cache (snapshot link and blob) and :class:`~semlens.errors.DownloadError`
  is raised;
- an unreachable Hub fails fast with :class:`~semlens.errors.DownloadError` and leaves no partial
  (``*.incomplete``) file behind;
- offline and not cached raises :class:`~semlens.errors.ModelNotFoundError` naming the command
  that fetches the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semlens.errors import DownloadError, ModelNotFoundError

__all__ = [
    "ProgressCallback",
    "is_offline",
    "hub_cache_dir",
    "hub_endpoint",
    "sha256_file",
    "git_blob_sha1_file",
    "snapshot_commit",
    "cached_file",
    "fetch_file",
    "remove_cached_file",
]

#: ``callback(description, bytes_done, bytes_total_or_None)``, called as a download progresses.
ProgressCallback = Callable[[str, int, "int | None"], None]

_TRUE = {"1", "on", "yes", "true"}
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_STALE_PARTIAL_SECONDS = 15 * 60
# (algorithm, resolved path, size, mtime_ns) -> digest of files already hashed by this process.
_VERIFIED: dict[tuple[str, str, int, int], str] = {}


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (read now) asks for no network access."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        value = os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().lower() in _TRUE


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache folder, from the environment as it is now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        home = Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = Path(os.path.expandvars(xdg)).expanduser() / "huggingface"
    return home / "hub"


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` as it is now (``None``: huggingface_hub's default)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def _endpoint_text() -> str:
    endpoint = hub_endpoint()
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    return endpoint


def _digest_file(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    path = Path(path)
    st = path.stat()
    key = (algorithm, str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return _VERIFIED[key]
    if algorithm == "git-sha1":
        digest = hashlib.sha1(b"blob %d\0" % st.st_size)
    else:
        digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    _VERIFIED[key] = digest.hexdigest()
    return _VERIFIED[key]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 (hex) of a file, memoised per (path, size, mtime) for this process."""
    return _digest_file(path, "sha256", chunk)


def git_blob_sha1_file(path: Path, chunk: int = 1 << 20) -> str:
    """The git blob id (hex sha1 of ``"blob <size>\\0" + content``) of a file: the id the Hub
    reports as the ``ETag`` of a regular (non-LFS) file. Memoised like :func:`sha256_file`."""
    return _digest_file(path, "git-sha1", chunk)


def _content_id(etag: str | None) -> str | None:
    """The content id an ETag (or a cache blob name) stands for: a sha256 (64 hex) or a git blob
    id (40 hex); ``None`` for anything else."""
    if etag is None:
        return None
    value = etag.strip().strip('"').lower()
    return value if _SHA256_RE.match(value) or _COMMIT_RE.match(value) else None


def snapshot_commit(path: Path) -> str | None:
    """The commit of a file in the Hub cache (``.../snapshots/<commit>/<filename>``), or ``None``."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "snapshots" and _COMMIT_RE.match(parts[i + 1]):
            return parts[i + 1]
    return None


def _storage_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def cached_file(repo_id: str, filename: str, revision: str) -> Path | None:
    """The cached copy of ``filename`` at ``revision`` (a commit or a branch already resolved
    once), or ``None``. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()), revision=revision)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None


def remove_cached_file(path: Path) -> None:
    """Delete a cached file: its snapshot entry and the blob it points to (if in a blobs folder)."""
    path = Path(path)
    targets = [path]
    if path.is_symlink():
        targets.append(path.resolve())
    for target in targets:
        try:
            target.unlink()
        except FileNotFoundError:
            pass
    _VERIFIED.clear()


def _partials(cache: Path, repo_id: str) -> set[Path]:
    blobs = _storage_folder(cache, repo_id) / "blobs"
    return set(blobs.glob("*.incomplete")) if blobs.is_dir() else set()


def _remove_partials(paths: set[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _remove_stale_partials(cache: Path, repo_id: str) -> None:
    """Delete ``*.incomplete`` files left by killed downloads (not written to for 15 minutes)."""
    now = time.time()
    stale = set()
    for p in _partials(cache, repo_id):
        try:
            if now - p.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                stale.add(p)
        except FileNotFoundError:
            pass
    _remove_partials(stale)


def _progress_class(callback: ProgressCallback) -> type:
    """A tqdm look-alike that forwards byte counts to ``callback`` (huggingface_hub's ``tqdm_class``)."""

    class _Bar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, desc: str | None = None,
                     **kwargs: Any) -> None:
            self.total = total
            self.n = initial
            self.desc = desc or ""
            callback(self.desc, self.n, self.total)

        def update(self, n: int | float = 1) -> None:
            self.n += int(n)
            callback(self.desc, self.n, self.total)

        def close(self) -> None:
            pass

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    return _Bar


def _verify(path: Path, sha256: str | None, size: int | None, label: str, *, downloaded: bool,
            etag: str | None = None) -> None:
    """Check size and content: against ``sha256`` when pinned, else against the Hub's ``etag``
    (a sha256 or a git blob id), else against the id the cache stored the file under (its blob
    name), if it has one. On mismatch delete the cache entry and raise DownloadError."""
    problem = None
    actual_size = path.stat().st_size
    expected = sha256 or _content_id(etag) or _content_id(path.resolve().name)
    if size is not None and actual_size != size:
        problem = f"size {actual_size} bytes, expected {size}"
    elif expected is not None:
        what = "sha256" if len(expected) == 64 else "git blob id"
        actual = sha256_file(path) if len(expected) == 64 else git_blob_sha1_file(path)
        if actual != expected:
            problem = f"{what} {actual[:16]}…, expected {expected[:16]}…"
    if problem is None:
        return
    remove_cached_file(path)
    when = "downloaded" if downloaded else "cached"
    raise DownloadError(
        f"checksum mismatch for the {when} file of {label} ({problem}); the file was deleted, "
        f"run `semlens download {label}` to fetch it again"
    )


def _hub_error(exc: BaseException, label: str, repo_id: str, filename: str, revision: str) -> Exception:
    """Turn a huggingface_hub / network exception into a semlens error (one line)."""
    from huggingface_hub import errors as hf_errors

    where = f"{repo_id}@{revision}/{filename}"
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return ModelNotFoundError(f"{label}: the Hub repo {repo_id} does not exist (or is private: log in with `hf auth login`)")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return ModelNotFoundError(f"{label}: the Hub repo {repo_id} has no revision {revision!r}")
    if isinstance(exc, hf_errors.EntryNotFoundError):
        return ModelNotFoundError(f"{label}: the Hub repo {repo_id}@{revision} has no file {filename!r}")
    if isinstance(exc, hf_errors.GatedRepoError):
        return DownloadError(f"{label}: {repo_id} is gated; accept its terms on the Hub and log in with `hf auth login`")
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return ModelNotFoundError(f"{label} is not cached and offline mode is on: run `semlens download {label}` online")
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if len(reason) > 160:
        reason = reason[:159] + "…"
    return DownloadError(
        f"cannot download {label} ({where}) from {_endpoint_text()}: {type(exc).__name__}: {reason}; "
        "check the network (or HF_ENDPOINT) and retry"
    )


def _probe(repo_id: str, filename: str, revision: str, label: str) -> tuple[str, str]:
    """One quick HEAD request (no retries) to the Hub: the file's ETag and the commit ``revision``
    stands for now, or an exception raised as a semlens error. Avoids huggingface_hub's long retry
    loop when the Hub is unreachable."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=hub_endpoint())
    try:
        meta = get_hf_file_metadata(url, timeout=10)
    except Exception as exc:
        raise _hub_error(exc, label, repo_id, filename, revision) from None
    if meta.commit_hash is None or meta.etag is None:
        raise DownloadError(
            f"cannot download {label}: {_endpoint_text()} does not answer like a Hugging Face Hub (no commit/ETag headers); check HF_ENDPOINT"
        )
    return meta.etag, meta.commit_hash


def _remember_ref(cache: Path, repo_id: str, revision: str, commit: str) -> None:
    """Record in the cache that ``revision`` (a branch or tag) stands for ``commit``, as
    huggingface_hub does (``refs/<revision>``), so the files are found offline by that name."""
    ref = _storage_folder(cache, repo_id) / "refs" / revision
    try:
        if ref.is_file() and ref.read_text().strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, ref)
    except OSError:
        pass  # only a cache shortcut: the next online call resolves the branch again


def fetch_file(
    repo_id: str,
    filename: str,
    revision: str,
    *,
    label: str,
    sha256: str | None = None,
    size: int | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
) -> tuple[Path, str]:
    """Get ``filename`` of ``repo_id`` at ``revision`` into the Hub cache, verified.

    A branch or tag is resolved to its commit first, and that commit's file is downloaded and
    checked (:func:`snapshot_commit` of the returned path names it).

    ``label`` names the model in messages (``semlens download LABEL`` fetches it). Returns
    ``(path, origin)`` with origin ``"cached"`` or ``"downloaded"``. Raises
    :class:`ModelNotFoundError` (unknown repo/file, or offline and not cached) or
    :class:`DownloadError` (network failure, checksum mismatch).
    """
    pinned = sha256 is not None or bool(_COMMIT_RE.match(revision))
    offline = is_offline()
    cached = None if force else cached_file(repo_id, filename, revision)
    if cached is not None and (pinned or offline):
        try:
            _verify(cached, sha256, size, label, downloaded=False)
            return cached, "cached"
        except DownloadError:
            if offline:
                raise
            cached = None  # corrupt cache entry deleted: download it again
    if offline:
        raise ModelNotFoundError(
            f"{label} is not in the local cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set: "
            f"run `semlens download {label}` with network access first"
        )
    try:
        etag, commit = _probe(repo_id, filename, revision, label)
    except DownloadError:
        if cached is not None:  # unpinned file, Hub unreachable: use what we have (checked)
            _verify(cached, None, size, label, downloaded=False)
            return cached, "cached"
        raise
    if sha256 is None and _content_id(etag) is None:
        raise DownloadError(
            f"cannot verify {label} ({repo_id}@{revision}/{filename}): {_endpoint_text()} reports no sha256 or "
            f"git blob id for it (ETag {etag!r}); pin the file with a registry entry or use a local copy"
        )

    from huggingface_hub import hf_hub_download

    cache = hub_cache_dir()
    _remove_stale_partials(cache, repo_id)
    before = _partials(cache, repo_id)
    try:
        path = Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=commit,  # the commit the ETag belongs to, even if the branch moves meanwhile
                cache_dir=str(cache),
                endpoint=hub_endpoint(),
                force_download=force,
                tqdm_class=_progress_class(progress) if progress is not None else None,
            )
        )
    except BaseException as exc:
        _remove_partials(_partials(cache, repo_id) - before)
        if isinstance(exc, Exception):
            raise _hub_error(exc, label, repo_id, filename, revision) from None
        raise
    _verify(path, sha256, size, label, downloaded=True, etag=etag)
    if revision != commit:
        _remember_ref(cache, repo_id, revision, commit)
    return path, "downloaded"
