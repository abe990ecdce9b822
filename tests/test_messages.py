"""Errors in each front end's words: the library names options as keyword arguments, the command
line as flags; each kind of error has its own exit code."""

from __future__ import annotations

import click
import pytest
from clips import make_clip
from conftest import assert_one_line_error, invoke_cli

import semlens.errors as errors
from semlens.errors import ExtractorMismatchError, ModelNotFoundError, OutputExistsError, SemlensError
from semlens.semantics import build_extractor
from semlens.upscaler import SemanticLensUpscaler
from semlens_cli.wording import cli_wording

FAST = ["--device", "cpu", "--threads", "1", "--codec", "ffv1"]


def test_every_error_kind_has_its_own_exit_code() -> None:
    kinds = [getattr(errors, name) for name in errors.__all__ if isinstance(getattr(errors, name), type)]
    specific = [k for k in kinds if k.exit_code != SemlensError.exit_code]
    codes = [k.exit_code for k in specific]
    assert len(set(codes)) == len(codes), {k.__name__: k.exit_code for k in specific}
    assert ExtractorMismatchError in specific and 130 not in codes and 2 not in codes  # 2: click's usage errors


def test_cli_wording_rewrites_only_options_of_the_command() -> None:
    @click.command()
    @click.option("--overwrite", is_flag=True)
    @click.option("--extractor", default=None)
    @click.option("--tile-overlap", type=int, default=None)
    def command(overwrite: bool, extractor: str | None, tile_overlap: int | None) -> None:
        pass

    text = ("pass overwrite=True or use extractor='lite' with tile_overlap=40; "
            "scale=4 stays, as does overwrite=False and path=a=b")
    assert cli_wording(text, command) == (
        "pass --overwrite or use --extractor lite with --tile-overlap 40; "
        "scale=4 stays, as does overwrite=False and path=a=b")
    assert cli_wording(text, None) == text  # no command running: unchanged


def test_output_exists_names_overwrite_as_each_front_end_spells_it(tmp_path, tiny_upscaler, tiny_x2_path) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError) as info:
        tiny_upscaler.upscale_video(src, dst)
    assert "overwrite=True" in str(info.value) and "--overwrite" not in str(info.value)

    code, _, stderr = invoke_cli(["upscale", src, dst, "--model", tiny_x2_path, *FAST, "-q"])
    line = assert_one_line_error(stderr, contains="pass --overwrite")
    assert code == OutputExistsError.exit_code and "overwrite=True" not in line

    # Folder runs report each file's error in the summary: in the command line's words too.
    videos, out = tmp_path / "videos", tmp_path / "upscaled"
    videos.mkdir()
    out.mkdir()
    make_clip(videos / "a.mp4", frames=4, size=(32, 24))
    (out / "a.mp4").write_bytes(b"precious")
    results = tiny_upscaler.upscale_folder(videos, out, codec="ffv1")
    assert "overwrite=True" in (results[0].error or "") and "--overwrite" not in (results[0].error or "")
    code, _, stderr = invoke_cli(["upscale", videos, out, "--model", tiny_x2_path, *FAST, "-q"])
    assert code == errors.BatchError.exit_code
    file_line = next(line for line in stderr.splitlines() if "a.mp4" in line)
    assert "pass --overwrite" in file_line and "overwrite=True" not in file_line, stderr


def test_model_extractor_mismatch_is_its_own_usage_error(tmp_path, tiny_x2_path) -> None:
    # The tiny model is built for the lite extractor's 8-d tokens; SAM gives 256-d ones. The check
    # comes before the extractor is built (no SAM checkpoint is looked for).
    with pytest.raises(ExtractorMismatchError, match="extractor='lite'") as info:
        SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", extractor="sam-vit-b")
    assert not isinstance(info.value, ModelNotFoundError)
    assert "256-d" in str(info.value) and "8-d" in str(info.value)

    loaded = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    other = build_extractor("lite")
    other.instance_dim = 16  # an extractor object with other token sizes, given to the constructor
    with pytest.raises(ExtractorMismatchError, match="16-d"):
        SemanticLensUpscaler(loaded.model, other)
    assert SemanticLensUpscaler(loaded.model, "none").extractor.name == "none"  # "none" fits any model

    src = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    code, _, stderr = invoke_cli(["upscale", src, tmp_path / "out.mp4", "--model", tiny_x2_path,
                                  "--extractor", "sam-vit-b", *FAST, "-q"])
    line = assert_one_line_error(stderr, contains="--extractor lite")
    assert code == ExtractorMismatchError.exit_code == 12
    assert "not found" not in line and "extractor='lite'" not in line
    assert not (tmp_path / "out.mp4").exists()
