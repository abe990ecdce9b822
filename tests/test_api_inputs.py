"""The Python API's own bad inputs: each a clear error of the right kind, said in Python's words.

- Frames of any shape down to 1 pixel a side work, however long and thin; empty frames are refused.
- ``from_pretrained`` refuses a window or overlap that is not a whole number, an extractor that is
  neither a name nor an extractor, a device torch has but semlens does not run on, a dtype the
  network cannot run in, and a scale that is not a number, each before any work.
- ``start`` past the end of the video says so (the file is fine); the progress total counts the
  frames of the part asked for.
- Messages name Python keywords (``device='cpu'``); the command line shows them as its options.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clips import make_clip
from conftest import invoke_cli

from semlens.errors import InvalidInputError, ModelNotFoundError
from semlens.upscaler import SemanticLensUpscaler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", [(2, 200), (200, 2), (1, 200), (5, 500), (1, 1)])
def test_long_thin_frames_are_upscaled(tiny_upscaler, shape) -> None:
    frames = [np.full((*shape, 3), 100 + 20 * i, np.uint8) for i in range(3)]
    out = list(tiny_upscaler.upscale_frames(frames))
    assert [o.shape for o in out] == [(2 * shape[0], 2 * shape[1], 3)] * 3


def test_empty_frames_are_refused(tiny_upscaler) -> None:
    with pytest.raises(InvalidInputError, match="at least 1x1"):
        list(tiny_upscaler.upscale_frames([np.zeros((0, 8, 3), np.uint8)]))


@pytest.mark.parametrize("kwargs, error, words", [
    ({"window": 2.5}, TypeError, "window must be a whole number"),
    ({"overlap": 1.5}, TypeError, "overlap must be a whole number"),
    ({"window": True}, TypeError, "window must be a whole number"),
    ({"extractor": 5}, TypeError, "extractor must be"),
    ({"device": "mps"}, ValueError, "not supported"),
    ({"dtype": torch.int8}, ValueError, "cannot run the network"),
    ({"tile": -1}, ValueError, "tile must be >= 0"),
])
def test_settings_that_cannot_work_are_refused(tiny_x2_path, kwargs, error, words) -> None:
    with pytest.raises(error, match=words):
        SemanticLensUpscaler.from_pretrained(tiny_x2_path, **{"device": "cpu", **kwargs})


def test_numpy_integers_are_whole_numbers(tiny_x2_path) -> None:
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", window=np.int64(4), overlap=np.int64(1))
    assert (up.settings.window, up.settings.overlap) == (4, 1)


@pytest.mark.parametrize("scale, error, words", [
    ("4", TypeError, "scale must be a whole number"),
    (True, TypeError, "scale must be a whole number"),
    (0, ModelNotFoundError, "no shipped model for scale 0"),
])
def test_a_scale_that_is_no_shipped_scale_is_refused(scale, error, words) -> None:
    with pytest.raises(error, match=words):
        SemanticLensUpscaler.from_pretrained(scale=scale, device="cpu")


def test_start_past_the_end_says_so_and_the_progress_total_counts_the_part(tmp_path, tiny_upscaler) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=10, size=(32, 24), fps=10)  # 1 s
    with pytest.raises(ValueError, match="past the end of the video"):
        tiny_upscaler.upscale_video(clip, tmp_path / "late.mp4", start=5)
    with pytest.raises(TypeError, match="max_frames must be a whole number"):
        tiny_upscaler.upscale_video(clip, tmp_path / "late.mp4", max_frames=2.5)
    assert not (tmp_path / "late.mp4").exists()
    calls: list[tuple[int, int | None]] = []
    result = tiny_upscaler.upscale_video(clip, tmp_path / "part.mp4", start=0.5, preset="ultrafast",
                                         progress=lambda done, total: calls.append((done, total)))
    assert result.frames == 5 and calls[-1] == (5, 5)
    calls.clear()
    result = tiny_upscaler.upscale_video(clip, tmp_path / "tail.mp4", start=0.3, seconds=20, preset="ultrafast",
                                         progress=lambda done, total: calls.append((done, total)))
    assert result.frames == 7 and calls[-1] == (7, 7)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_messages_name_keywords_and_the_command_line_its_options(tmp_path, tiny_x2_path) -> None:
    with pytest.raises(ValueError, match="use device='cpu'"):
        SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cuda")
    clip = make_clip(tmp_path / "in.mp4", frames=2, size=(32, 24))
    code, _, err = invoke_cli(["upscale", clip, tmp_path / "out.mp4", "--model", tiny_x2_path, "--device", "cuda"])
    assert code == 1 and "use --device cpu" in err and "device='cpu'" not in err
