"""Resolution and verified download against a real loopback HTTP server (tests/hubserver.py)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hubserver import FakeHub, fake_hub_env, saved_model, serve_model, tiny_model

from semlens.errors import DownloadError, ModelNotFoundError
from semlens.hub import ModelSpec, download, load_model, registry, resolve, resolve_sam_checkpoint
from semlens.hub.specs import SAM_REPO_ID

REPO = "semlens-test/tiny-x2"


def _cache_files(hub_cache: Path) -> list[Path]:
    return sorted(p for p in hub_cache.rglob("*") if p.is_file() or p.is_symlink())


def _incomplete(hub_cache: Path) -> list[Path]:
    return sorted(hub_cache.rglob("*.incomplete"))


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with fake_hub_env(tmp_path, monkeypatch) as hub:
        yield hub


@pytest.fixture
def cache(fake_hub: FakeHub) -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


@pytest.fixture(scope="module")
def model():
    return tiny_model(scale=2, seed=3)


@pytest.fixture
def served(fake_hub: FakeHub, model, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelSpec, bytes]:
    """A registry entry ``semlens-test-x2`` pinned to a commit of REPO on the fake hub."""
    commit, data = serve_model(fake_hub, REPO, model, {"name": "semlens-test-x2"})
    spec = ModelSpec(
        name="semlens-test-x2", kind="enhancer", description="test", scale=2,
        enhancer=model.config.to_dict(), repo_id=REPO, revision=commit, filename="model.safetensors",
        sha256=hashlib.sha256(data).hexdigest(), size=len(data),
    )
    monkeypatch.setitem(registry(), spec.name, spec)
    return spec, data


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_download_then_cache_hit_without_network(fake_hub: FakeHub, served, model, cache: Path) -> None:
    spec, data = served
    first = resolve(spec.name)
    assert first.origin == "downloaded"
    assert first.weights.read_bytes() == data
    assert first.weights.is_relative_to(cache)
    assert fake_hub.file_requests("model.safetensors") == 1

    fake_hub.stop()  # nobody listens any more
    loaded = load_model(spec.name)
    assert loaded.spec == spec and loaded.name == "semlens-test-x2"
    assert _same_state(loaded.model, model)
    assert resolve(spec.name).origin == "cached"
    assert fake_hub.file_requests("model.safetensors") == 1


def test_pinned_revision_is_what_is_downloaded(fake_hub: FakeHub, served, model) -> None:
    spec, data = served
    newer = tiny_model(scale=2, seed=99)
    head, newer_data = serve_model(fake_hub, REPO, newer)  # main moves on
    assert head != spec.revision and newer_data != data
    loaded = load_model(spec.name)
    assert _same_state(loaded.model, model)
    assert all(spec.revision in p for m, p in fake_hub.requests if m == "GET")
    # A repo id follows the branch, or the commit written after '@'.
    assert _same_state(load_model(REPO).model, newer)
    assert _same_state(load_model(f"{REPO}@{spec.revision}").model, model)


def test_checksum_mismatch_deletes_the_file(fake_hub: FakeHub, served, cache: Path) -> None:
    spec, _ = served
    fake_hub.wrong_bytes = True
    with pytest.raises(DownloadError, match="checksum mismatch") as exc:
        resolve(spec.name)
    text = str(exc.value)
    assert "\n" not in text and f"semlens download {spec.name}" in text and "deleted" in text
    assert not [p for p in _cache_files(cache) if "blobs" in p.parts or "snapshots" in p.parts]
    assert not _incomplete(cache)

    fake_hub.wrong_bytes = False  # the next attempt gets the real file
    assert resolve(spec.name).origin == "downloaded"


def test_repo_id_download_is_checked_against_the_lfs_sha256(fake_hub: FakeHub, served, cache: Path) -> None:
    fake_hub.wrong_bytes = True  # no registry sha256 here: the ETag (sha256 of an LFS file) is used
    with pytest.raises(DownloadError, match="checksum mismatch"):
        resolve(REPO)
    assert not list(cache.rglob("model.safetensors"))


def test_repo_id_config_is_checked_against_its_git_blob_id(fake_hub: FakeHub, served, cache: Path) -> None:
    fake_hub.corrupt = {"config.json"}  # a regular (non-LFS) file: its ETag is its git blob id
    with pytest.raises(DownloadError, match="checksum mismatch.*git blob id") as exc:
        resolve(REPO)
    assert "\n" not in str(exc.value)
    assert not list(cache.rglob("config.json"))
    fake_hub.corrupt = set()
    assert resolve(REPO).config is not None


def test_repo_id_files_come_from_one_commit_while_the_branch_moves(fake_hub: FakeHub, served) -> None:
    first = fake_hub.repos[REPO].refs["main"]
    other_weights, other_config = saved_model(tiny_model(scale=4, seed=5), {"name": "other"})
    moved: list[str] = []

    def push_during_weights(revision: str, filename: str) -> None:
        if filename == "model.safetensors" and not moved:  # main moves on between the two files
            moved.append(fake_hub.commit(REPO, {"model.safetensors": other_weights, "config.json": other_config}))

    fake_hub.on_get = push_during_weights
    resolved = resolve(REPO)
    assert moved and moved[0] != first and resolved.config is not None
    assert resolved.weights.parent.name == resolved.config.parent.name == first
    loaded = load_model(REPO)  # resolved again: the branch is at the x4 model now, both files with it
    assert loaded.scale == 4 and loaded.path.parent.name == moved[0]


def test_repo_id_cached_files_are_checked_offline(
    fake_hub: FakeHub, served, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = resolve(REPO).config
    assert config is not None
    blob = config.resolve()
    text = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(text.replace(b'"scale": 2', b'"scale": 4'))  # same size, other content
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="cached file"):
        resolve(REPO)
    assert not blob.exists()


def test_repo_id_file_without_a_content_id_is_refused(fake_hub: FakeHub, served, cache: Path) -> None:
    fake_hub.opaque_etags = True
    with pytest.raises(DownloadError, match="cannot verify"):
        resolve(REPO)
    assert fake_hub.file_requests() == 0 and not list(cache.rglob("model.safetensors"))
    resolve(served[0].name)  # a registry entry pins its own sha256: no ETag needed


def test_corrupt_cache_entry_is_replaced_online_and_reported_offline(
    fake_hub: FakeHub, served, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, data = served
    path = resolve(spec.name).weights
    blob = path.resolve()
    blob.chmod(0o644)
    blob.write_bytes(b"\0" * len(data))  # bit rot, same size

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="cached file"):
        resolve(spec.name)
    assert not blob.exists()

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    again = resolve(spec.name)
    assert again.origin == "downloaded" and again.weights.read_bytes() == data


def test_offline_with_cache_loads_without_requests(
    fake_hub: FakeHub, served, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = served
    download(spec.name)
    before = len(fake_hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at call time
    assert _same_state(load_model(spec.name).model, model)
    assert len(fake_hub.requests) == before


def test_offline_without_cache_names_the_download_command(
    fake_hub: FakeHub, served, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = served
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=f"`semlens download {spec.name}`") as exc:
        load_model(spec.name)
    assert "\n" not in str(exc.value)
    with pytest.raises(ModelNotFoundError, match=f"`semlens download {REPO}`"):
        load_model(REPO)
    assert fake_hub.requests == []


@pytest.mark.parametrize("how", ["503", "stopped"])
def test_server_down_is_a_clear_error_and_leaves_nothing(fake_hub: FakeHub, served, cache: Path, how: str) -> None:
    spec, _ = served
    if how == "503":
        fake_hub.down = True
    else:
        fake_hub.stop()
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot download semlens-test-x2") as exc:
        resolve(spec.name)
    assert time.monotonic() - start < 5, "no long retry loop when the Hub is unreachable"
    assert "\n" not in str(exc.value) and "retry" in str(exc.value)
    assert not [p for p in _cache_files(cache) if "blobs" in p.parts or "snapshots" in p.parts]


def test_transfer_cut_midway_leaves_no_partial_file(fake_hub: FakeHub, served, cache: Path) -> None:
    spec, _ = served
    fake_hub.truncate = True  # huggingface_hub resumes a few times (1 s apart), then gives up
    with pytest.raises(DownloadError, match="cannot download semlens-test-x2"):
        resolve(spec.name)
    assert fake_hub.file_requests("model.safetensors") >= 2
    assert not _incomplete(cache)
    assert not [p for p in _cache_files(cache) if "blobs" in p.parts or "snapshots" in p.parts]


def test_stale_partial_files_are_cleaned(fake_hub: FakeHub, served, cache: Path) -> None:
    spec, _ = served
    blobs = cache / ("models--" + REPO.replace("/", "--")) / "blobs"
    blobs.mkdir(parents=True)
    stale = blobs / "0123abcd.deadbeef.incomplete"
    stale.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = blobs / "4567abcd.cafebabe.incomplete"  # another process may be writing this one
    fresh.write_bytes(b"half")
    resolve(spec.name)
    assert not stale.exists() and fresh.exists()


def test_unknown_repo_revision_and_file(fake_hub: FakeHub, served) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve("nobody/nothing")
    with pytest.raises(ModelNotFoundError, match="no revision 'v9'"):
        resolve(f"{REPO}@v9")
    fake_hub.commit("someone/not-a-model", {"README.md": b"hi"})
    with pytest.raises(ModelNotFoundError, match="no file 'model.safetensors'"):
        resolve("someone/not-a-model")


def test_download_progress_is_reported(fake_hub: FakeHub, served) -> None:
    spec, data = served
    seen: list[tuple[str, int, int | None]] = []
    result = download(spec.name, progress=lambda d, n, t: seen.append((d, n, t)))
    assert result.origin == "downloaded"
    assert seen and seen[-1][1] == len(data) and seen[-1][2] == len(data)
    assert download(spec.name).origin == "cached"
    assert download(spec.name, force=True).origin == "downloaded"


# -- SAM checkpoints ------------------------------------------------------------------------------

SAM_FILE = "checkpoints/sam_vit_b_01ec64.pth"


@pytest.fixture
def fake_sam(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A stand-in checkpoint served where the real one lives, with the vit_b spec re-pinned to it."""
    data = os.urandom(4096)
    fake_hub.commit(SAM_REPO_ID, {SAM_FILE: data})
    real = registry()["sam-vit-b"]
    monkeypatch.setitem(
        registry(), "sam-vit-b", replace(real, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    )
    return data


def test_sam_checkpoint_download_cache_and_explicit_path(
    fake_hub: FakeHub, fake_sam: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = resolve_sam_checkpoint("vit_b")
    assert path.read_bytes() == fake_sam and path.name == "sam_vit_b_01ec64.pth"
    main = fake_hub.repos[SAM_REPO_ID].refs["main"]  # the branch is resolved to its commit first
    assert ("HEAD", f"/{SAM_REPO_ID}/resolve/main/{SAM_FILE}") in fake_hub.requests
    assert [r for r in fake_hub.requests if r[0] == "GET"] == [("GET", f"/{SAM_REPO_ID}/resolve/{main}/{SAM_FILE}")]
    fake_hub.stop()
    assert resolve_sam_checkpoint("sam-vit-b") == path  # cached, branch pin + sha256: no network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_sam_checkpoint("vit-b") == path
    mine = tmp_path / "my sam.pth"
    mine.write_bytes(b"fine-tuned")
    assert resolve_sam_checkpoint("vit_b", mine) == mine
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_sam_checkpoint("vit_b", tmp_path / "nope.pth")
    with pytest.raises(ModelNotFoundError, match="`semlens download sam-vit-h`"):
        resolve_sam_checkpoint("vit_h")
    with pytest.raises(ModelNotFoundError, match="vit_b, vit_l, vit_h"):
        resolve_sam_checkpoint("vit_x")


def test_real_sam_spec_rejects_a_file_that_is_not_the_official_one(fake_hub: FakeHub, cache: Path) -> None:
    fake_hub.commit(SAM_REPO_ID, {SAM_FILE: b"not the real checkpoint"})
    with pytest.raises(DownloadError, match="checksum mismatch .*expected 375042383"):
        download("sam-vit-b")
    assert not list(cache.rglob("sam_vit_b_01ec64.pth"))


def test_sam_names_are_not_upscaling_models(fake_hub: FakeHub) -> None:
    with pytest.raises(ModelNotFoundError, match="extractor weights"):
        load_model("sam-vit-b")
    assert fake_hub.requests == []
