"""The model commands (models, download, export) run through click, against the fake Hub."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from hubserver import FakeHub, fake_hub_env, tiny_model

from semlens.errors import DownloadError, ModelNotFoundError
from semlens.hub import registry, save_model
from semlens.hub.specs import SAM_REPO_ID
from semlens_cli.hub_commands import download_command, export_command, models_command

SAM_FILE = "checkpoints/sam_vit_b_01ec64.pth"


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with fake_hub_env(tmp_path, monkeypatch) as hub:
        yield hub


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def fake_sam(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> bytes:
    data = b"sam" * 5000
    fake_hub.commit(SAM_REPO_ID, {SAM_FILE: data})
    spec = replace(registry()["sam-vit-b"], sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(registry(), "sam-vit-b", spec)
    return data


def test_models_table_and_json(fake_hub: FakeHub, runner: CliRunner, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "pkg"
    weights.mkdir()
    monkeypatch.setattr("semlens.hub.loading._weights_root", lambda: weights)
    default_like = tiny_model(scale=2, token_source="pooled", motion_search=8)
    save_model(weights / "semlens-tiny-x2.safetensors", default_like, {"name": "semlens-tiny-x2"})

    result = runner.invoke(models_command, [])
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.output.splitlines()]
    table = {row[0].split()[0]: row for row in rows if row and row[0].startswith(("semlens-", "sam-"))}
    assert table["semlens-tiny-x2"][1:5] == ["x2", "132.0k", "lite (any fits)", "bundled"]
    assert table["semlens-tiny-x4"][0] == "semlens-tiny-x4 (default)" and table["semlens-tiny-x4"][4] == "not installed"
    assert table["sam-vit-h"][4:] == ["remote", "2.6 GB"]
    assert "semlens-tiny-x4-bi" in table and "semlens-tiny-x2-bi" in table  # full names, never cut
    assert "clean bicubic downscales and benchmarks: semlens-tiny-x4-bi, semlens-tiny-x2-bi" in \
        " ".join(result.output.split())

    result = runner.invoke(models_command, ["--json"])
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["semlens-tiny-x2"]["status"] == "bundled" and rows["semlens-tiny-x2"]["parameters"] > 100_000
    assert rows["sam-vit-b"]["status"] == "remote" and rows["sam-vit-b"]["size"] == 375_042_383
    assert fake_hub.requests == []


def test_models_shows_an_approximate_size_as_such(fake_hub: FakeHub, runner: CliRunner) -> None:
    # Only "about 1.25 GB" is known of the ViT-L checkpoint: listed as approximate, no exact count.
    result = runner.invoke(models_command, [])
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.output.splitlines()]
    table = {row[0]: row for row in rows if row and row[0].startswith("sam-")}
    assert table["sam-vit-l"][4:] == ["remote", "~1.25 GB"]
    assert table["sam-vit-b"][5] == "375.0 MB"  # exact sizes are shown as before
    assert "~: approximate size" in result.output
    rows_json = {row["name"]: row for row in json.loads(runner.invoke(models_command, ["--json"]).output)}
    assert rows_json["sam-vit-l"]["size"] is None and rows_json["sam-vit-l"]["approx_size"] == 1_250_000_000
    assert rows_json["sam-vit-b"]["approx_size"] is None
    assert fake_hub.requests == []


def test_download_sam_then_listed_as_cached(fake_hub: FakeHub, fake_sam: bytes, runner: CliRunner) -> None:
    result = runner.invoke(download_command, ["sam-vit-b"])
    assert result.exit_code == 0, result.output
    assert "sam-vit-b downloaded:" in result.output
    path = Path(result.output.strip().split(": ", 1)[1])
    assert path.read_bytes() == fake_sam
    again = runner.invoke(download_command, ["sam-vit-b"])
    assert "already cached" in again.output
    rows = {row["name"]: row for row in json.loads(runner.invoke(models_command, ["--json"]).output)}
    assert rows["sam-vit-b"]["status"] == "cached"


def test_download_errors_are_semlens_errors(fake_hub: FakeHub, fake_sam: bytes, runner: CliRunner) -> None:
    result = runner.invoke(download_command, ["no-such-model"])
    assert isinstance(result.exception, ModelNotFoundError)
    fake_hub.wrong_bytes = True
    result = runner.invoke(download_command, ["sam-vit-b"])
    assert isinstance(result.exception, DownloadError) and "checksum mismatch" in str(result.exception)


def test_export_command_with_push(fake_hub: FakeHub, runner: CliRunner, tmp_path: Path) -> None:
    source = save_model(tmp_path / "trained.safetensors", tiny_model(scale=2), {"name": "cli-x2"})
    result = runner.invoke(export_command, [str(source), str(tmp_path / "out"), "--push", "me/cli-x2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "README.md").is_file()
    commit = fake_hub.repos["me/cli-x2"].refs["main"]
    assert f"revision='{commit}'" in result.output and "filename='model.safetensors'" in result.output
