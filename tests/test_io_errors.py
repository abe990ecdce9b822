"""Bad inputs end in our error types (one-line messages), never in an FFmpeg exception or a hang."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from clips import make_audio_only, make_clip, pattern_frame, truncate_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semlens.errors import InputNotFoundError, InvalidInputError, SemlensError
from semlens.io import TruncatedInputWarning, VideoWriter, open_source, probe


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text


def test_missing_path():
    with pytest.raises(InputNotFoundError, match="does not exist") as info:
        open_source("/nonexistent/clip.mp4")
    _one_line(info.value)
    with pytest.raises(InputNotFoundError):
        probe("/nonexistent/clip.mp4")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty") as info:
        open_source(path)
    _one_line(info.value)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are my holiday notes, not a video\n" * 20)
    with pytest.raises(InvalidInputError, match="not a video") as info:
        open_source(path)
    _one_line(info.value)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mkv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidInputError):
        open_source(path)


def test_audio_only_file(tmp_path):
    path = make_audio_only(tmp_path / "song.mp4")
    with pytest.raises(InvalidInputError, match="no video stream") as info:
        open_source(path)
    _one_line(info.value)
    assert "audio" in str(info.value)


def test_truncated_mp4_without_index(tmp_path):
    # the muxer writes the mp4 index (moov) at the end: half a file has no index at all
    clip = make_clip(tmp_path / "in.mp4", frames=30)
    cut = truncate_file(clip, 0.5, tmp_path / "half.mp4")
    with pytest.raises(InvalidInputError) as info:
        list(open_source(cut))
    _one_line(info.value)


def _faststart_clip(path: Path, frames: int = 30) -> Path:
    """An mp4 with its index first (our writer uses +faststart), like most downloaded files."""
    with VideoWriter(path, width=64, height=48, preset="ultrafast") as writer:
        for i in range(frames):
            writer.write(pattern_frame(i, pattern="noise"))  # noise: bytes spread evenly over frames
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_truncated_file_decodes_what_it_can_and_warns(tmp_path, suffix):
    if suffix == ".mp4":
        clip = _faststart_clip(tmp_path / "in.mp4")
    else:
        clip = make_clip(tmp_path / "in.mkv", frames=30, pattern="noise")
    cut = truncate_file(clip, 0.5, tmp_path / f"half{suffix}")
    reader = open_source(cut)
    with pytest.warns(TruncatedInputWarning, match="truncated"):
        frames = list(reader)
    assert 0 < len(frames) < 30
    assert reader.truncated and reader.problems
    assert all(f.image.shape == (48, 64, 3) for f in frames)


def test_complete_file_does_not_warn(tmp_path):
    clip = _faststart_clip(tmp_path / "in.mp4", frames=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader = open_source(clip)
        assert len(list(reader)) == 10
    assert not reader.truncated


def test_truncated_to_almost_nothing(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=10, pattern="noise")
    cut = truncate_file(clip, 0.02, tmp_path / "tiny.mkv")
    with pytest.raises(InvalidInputError) as info:
        list(open_source(cut))
    _one_line(info.value)


def test_folder_without_images_given_to_probe(tmp_path):
    (tmp_path / "clip.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="holds no images"):
        probe(tmp_path)


# -- fuzzing: mutated bytes of a small real mp4 ------------------------------------------------------

_TIME_LIMIT = 20.0  # seconds per mutated file; a real read takes milliseconds


def _read_everything(path: Path, outcome: dict[str, object]) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedInputWarning)
            with open_source(path) as reader:
                outcome["frames"] = sum(1 for _ in reader)
                outcome["info"] = reader.info
        outcome["result"] = "ok"
    except SemlensError as exc:
        outcome["result"] = exc
    except BaseException as exc:  # anything else is a bug: report it to the test thread
        outcome["result"] = exc


@pytest.fixture(scope="module")
def seed_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _faststart_clip(tmp_path_factory.mktemp("fuzz") / "seed.mp4", frames=8).read_bytes()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=24
    ),
    header_bias=st.booleans(),
    cut=st.one_of(st.none(), st.floats(0.05, 1.0)),
)
def test_mutated_bytes_end_in_our_error_or_success(tmp_path, seed_mp4, mutations, header_bias, cut):
    data = bytearray(seed_mp4)
    span = min(len(data), 2048) if header_bias else len(data)  # the index/headers are at the start
    for where, value in mutations:
        data[int(where * span)] = value
    if cut is not None:
        data = data[: max(1, int(len(data) * cut))]
    path = tmp_path / "mutant.mp4"
    path.write_bytes(bytes(data))

    outcome: dict[str, object] = {}
    worker = threading.Thread(target=_read_everything, args=(path, outcome), daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(_TIME_LIMIT)
    assert not worker.is_alive(), f"reading a mutated file took more than {_TIME_LIMIT}s"
    assert time.monotonic() - start < _TIME_LIMIT
    result = outcome["result"]
    if result != "ok":
        assert isinstance(result, InvalidInputError), f"unexpected {type(result).__name__}: {result}"
        _one_line(result)
    else:
        assert outcome["frames"] >= 1
