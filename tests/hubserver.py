"""A fake Hugging Face Hub on 127.0.0.1 for tests (real HTTP, no mocks of huggingface_hub).

:class:`FakeHub` serves, from in-memory repos, the endpoints huggingface_hub uses to download
(``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``, ``GET /api/models/{repo_id}/revision/
{revision}``) and to upload through the plain (non-Xet) commit API (``POST /api/repos/create``,
``/api/validate-yaml``, ``/api/models/{repo_id}/preupload/{rev}``, ``/api/models/{repo_id}/commit/
{rev}``), with the headers ``huggingface_hub.file_download`` reads: ``X-Repo-Commit``, ``ETag``,
and for LFS-like files (``.safetensors``, ``.pth``, ...) ``X-Linked-Etag`` (the sha256) and
``X-Linked-Size``; errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``).

Switches: ``down`` (every request answered 503), ``wrong_bytes`` (file bodies corrupted, same
length, headers still those of the real file; ``corrupt``: a set of file names corrupted that way),
``truncate`` (file bodies cut in half and the connection closed), ``opaque_etags`` (ETags that are
no content id, and no ``X-Linked-Etag``). ``on_get(revision, filename)``, if set, is called while
a client waits for a file's body (before it is sent). ``requests`` logs ``(method, path)`` of every request.

:func:`fake_hub_env` (and the :func:`fake_hub` fixture around it) starts one, points
``HF_ENDPOINT`` and the cache (``HF_HOME``, ``HF_HUB_CACHE``) at it and a temporary folder, and
patches the values huggingface_hub read from the environment at import time
(``huggingface_hub.constants``). In a test module::

    @pytest.fixture
    def fake_hub(tmp_path, monkeypatch):
        with fake_hub_env(tmp_path, monkeypatch) as hub:
            yield hub
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

__all__ = ["FakeHub", "fake_hub", "fake_hub_env", "git_blob_sha1", "tiny_model", "saved_model", "serve_model"]

LFS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub uses as the ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """An in-memory Hub served over HTTP on 127.0.0.1 (a random free port)."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: list[str | None] = []
        self.down = False
        self.wrong_bytes = False
        self.corrupt: set[str] = set()
        self.truncate = False
        self.opaque_etags = False
        self.on_get: Callable[[str, str], None] | None = None
        self._counter = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content ------------------------------------------------------------------------------

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add or replace ``files`` on ``branch`` of ``repo_id`` (created if new) as a new commit;
        return the commit's 40-hex id."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, _Repo())
            parent = repo.refs.get(branch)
            tree = dict(repo.commits[parent]) if parent else {}
            tree.update(files)
            self._counter += 1
            seed = f"{repo_id}|{parent}|{self._counter}|" + "|".join(
                f"{k}:{hashlib.sha256(v).hexdigest()}" for k, v in sorted(tree.items())
            )
            sha = hashlib.sha1(seed.encode()).hexdigest()
            repo.commits[sha] = tree
            repo.refs[branch] = sha
            return sha

    def lookup(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | str:
        """``(commit, files)`` of a revision (branch or commit), or an X-Error-Code."""
        repo = self.repos.get(repo_id)
        if repo is None:
            return "RepoNotFound"
        sha = repo.refs.get(revision, revision if revision in repo.commits else None)
        if sha is None:
            return "RevisionNotFound"
        return sha, repo.commits[sha]

    def file_requests(self, filename: str | None = None, method: str = "GET") -> int:
        """How many ``method`` requests asked for a file (``filename`` or any)."""
        return sum(
            1 for m, p in self.requests
            if m == method and "/resolve/" in p and (filename is None or p.endswith("/" + filename))
        )

    # -- server -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake hub is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (later connections are refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._thread = None
        # keep _server so that `url` still names the (now closed) address

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    # -- helpers ------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # no keep-alive: stop() really cuts clients off
        self.close_connection = True
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, head: bool = False,
               headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message}).encode(), extra, head=head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parts(self) -> list[str]:
        return [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]

    def _log(self) -> bool:
        hub = self.hub
        hub.requests.append((self.command, urlsplit(self.path).path))
        hub.auth_headers.append(self.headers.get("Authorization"))
        if hub.down:
            self._body()
            self._error(503, None, "the fake hub is down", head=self.command == "HEAD")
            return False
        return True

    # -- verbs --------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        if self._log():
            self._resolve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        if not self._log():
            return
        parts = self._parts()
        if parts[:2] == ["api", "models"] and len(parts) >= 5 and parts[4] == "revision":
            self._revision_info(f"{parts[2]}/{parts[3]}", "/".join(parts[5:]) or "main")
        else:
            self._resolve(head=False)

    def do_POST(self) -> None:  # noqa: N802
        if not self._log():
            return
        parts = self._parts()
        body = self._body()
        if parts == ["api", "repos", "create"]:
            data = json.loads(body or b"{}")
            repo_id = f"{data.get('organization')}/{data.get('name')}"
            with self.hub._lock:
                self.hub.repos.setdefault(repo_id, _Repo())
            self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})
        elif parts == ["api", "validate-yaml"]:
            self._json(200, {"errors": [], "warnings": []})
        elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
            data = json.loads(body or b"{}")
            files = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                for f in data.get("files", [])
            ]
            self._json(200, {"files": files})
        elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
            self._commit(f"{parts[2]}/{parts[3]}", "/".join(parts[5:]), body)
        else:
            self._error(404, None, f"no route for POST {self.path}")

    # -- endpoints ----------------------------------------------------------------------------

    def _resolve(self, head: bool) -> None:
        parts = self._parts()
        if len(parts) < 5 or parts[2] != "resolve":
            self._error(404, None, f"no route for {self.command} {self.path}", head=head)
            return
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        found = self.hub.lookup(repo_id, revision)
        if isinstance(found, str):
            self._error(404, found, f"{found}: {repo_id}@{revision}", head=head)
            return
        sha, files = found
        if filename not in files:
            self._error(404, "EntryNotFound", f"{filename} not in {repo_id}@{revision}", head=head,
                        headers={"X-Repo-Commit": sha})
            return
        data = files[filename]
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "none"}
        if filename.endswith(LFS_SUFFIXES):
            headers["ETag"] = f'"{git_blob_sha1(data)}"'  # the pointer's oid, like the real Hub
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        if self.hub.opaque_etags:
            headers.pop("X-Linked-Etag", None)
            headers["ETag"] = f'"v{len(data)}-{self.hub._counter}"'
        if head:
            self._send(200, data, headers, content_type="application/octet-stream", head=True)
            return
        if self.hub.on_get is not None:
            self.hub.on_get(revision, filename)
        if self.hub.wrong_bytes or filename in self.hub.corrupt:
            data = bytes(b ^ 0x5A for b in data)
        if self.hub.truncate:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(200, data, headers, content_type="application/octet-stream")

    def _revision_info(self, repo_id: str, revision: str) -> None:
        found = self.hub.lookup(repo_id, revision)
        if isinstance(found, str):
            self._error(404, found, f"{found}: {repo_id}@{revision}")
            return
        sha, files = found
        self._json(200, {
            "id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
            "siblings": [{"rfilename": name, "size": len(data)} for name, data in sorted(files.items())],
        })

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        if repo_id not in self.hub.repos:
            self._error(404, "RepoNotFound", f"RepoNotFound: {repo_id}")
            return
        files: dict[str, bytes] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                self._error(400, None, f"the fake hub does not support {item['key']!r} operations")
                return
        sha = self.hub.commit(repo_id, files, branch=revision or "main")
        self._json(200, {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                         "pullRequestUrl": None})


@contextmanager
def fake_hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Run a :class:`FakeHub` with huggingface_hub pointed at it and at an empty cache in
    ``tmp_path / "hf-home"`` (online, Xet and telemetry off, a fake token); ``monkeypatch``
    undoes the environment changes."""
    from huggingface_hub import constants

    hub = FakeHub().start()
    home = tmp_path / "hf-home"
    cache = home / "hub"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub.constants read the environment once, at import: patch the values too.
    patches = {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,  # upload through the plain commit API the fake hub speaks
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Fixture form of :func:`fake_hub_env` (import it, or define your own around the function)."""
    with fake_hub_env(tmp_path, monkeypatch) as hub:
        yield hub


# ---------------------------------------------------------------------------------------------
# Helpers for hub tests: tiny models and specs served by a FakeHub
# ---------------------------------------------------------------------------------------------


def tiny_model(scale: int = 2, seed: int = 0, **overrides: object):  # -> PixelEnhancer
    """A random tiny :class:`~semlens.enhancer.PixelEnhancer` (preset ``tiny``)."""
    import torch

    from semlens.enhancer import EnhancerConfig, PixelEnhancer

    torch.manual_seed(seed)
    return PixelEnhancer(EnhancerConfig.preset("tiny", scale=scale, **overrides))


def saved_model(model: object, meta: dict | None = None) -> tuple[bytes, bytes]:
    """``(model.safetensors bytes, config.json bytes)`` of ``model`` saved by semlens."""
    import tempfile

    from semlens.hub import save_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_model(Path(tmp) / "folder", model, meta or {"name": "test"})
        return (folder / "model.safetensors").read_bytes(), (folder / "config.json").read_bytes()


def serve_model(hub: FakeHub, repo_id: str, model: object, meta: dict | None = None) -> tuple[str, bytes]:
    """Commit ``model`` to ``repo_id`` as a model repo (model.safetensors + config.json);
    return ``(commit, weights bytes)``."""
    weights, config = saved_model(model, meta)
    return hub.commit(repo_id, {"model.safetensors": weights, "config.json": config}), weights
