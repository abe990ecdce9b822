"""Bounded fuzzing of folder scans and output paths.

Not here: hypothesis over the window maths (tests/test_windows.py) and over mutated mp4 bytes fed
to ``semlens.io.open_source`` (tests/test_io_errors.py::test_mutated_bytes_end_in_our_error_or_success,
which already bounds each example with a time check); they are not duplicated.

Here: folder scans ignore links that point outside the input folder (files and folders) and the
partial files of other runs; output paths mirror the input's relative paths and can never leave the
output folder, whatever the names (dots, ``..``-like names, spaces, non-ASCII); a name with a
``..`` component or an absolute path is refused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from clips import make_clip, read_frames
from conftest import digest, partials_under
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semlens.errors import OutputError
from semlens.io import VIDEO_EXTENSIONS
from semlens.upscaler import find_videos, output_path_for

pytestmark = pytest.mark.usefixtures("one_thread")

# Names that look like path tricks but are ordinary file or folder names.
ODD_NAMES = ["...", "..mp4", "...mp4", "a..b.mp4", ". .mp4", ".. .mp4", "-rf.mp4", "ü ñ 日本.mp4", "x\\y.mp4",
             "name with spaces.mkv", ".hidden.mp4", "$HOME.mp4", "*.mp4", "--overwrite.mp4"]

segment = st.one_of(
    st.sampled_from([*ODD_NAMES, "sub", "a b", "...", ".x", "é"]),
    st.text(st.characters(codec="utf-8", exclude_characters="/\0", exclude_categories=["Cs"]),
             min_size=1, max_size=12).filter(lambda s: s not in (".", "..")),
)


def inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(segment, min_size=1, max_size=4),
       suffix=st.sampled_from([".mp4", ".mkv", ".webm", ".flv", ".MOV", ".avi", ""]))
def test_output_path_mirrors_and_stays_inside(parts, suffix):
    out = Path("/srv/out")
    rel = Path(*parts[:-1], parts[-1] + suffix)
    target = output_path_for(rel, out)
    assert inside(target, out)
    if rel.suffix.lower() in (".mp4", ".mkv", ".mov", ".m4v", ".ts"):  # containers that hold H.264 and its times
        assert target == out / rel  # the same relative path
    else:
        assert target.parent == out / rel.parent and target.suffix == ".mkv"  # only the container changes


@settings(max_examples=40, deadline=None)
@given(before=st.lists(segment, max_size=2), after=st.lists(segment, max_size=2),
       absolute=st.booleans())
def test_dot_dot_or_absolute_relative_paths_are_refused(before, after, absolute):
    rel = Path(*before, "..", *after, "x.mp4")
    if absolute:
        rel = Path("/", *before, "x.mp4")
    with pytest.raises(OutputError, match="outside the output folder"):
        output_path_for(rel, Path("/srv/out"))


def _tree(root: Path, outside: Path, entries: list[tuple[list[str], str]]) -> set[Path]:
    """Create ``entries`` (path segments, kind) under ``root``; return the paths find_videos must list.

    kinds: ``video`` (a file), ``link_in`` (a link to a video inside), ``link_out`` (a link to a file
    outside), ``dir_out`` (a folder link to outside), ``partial`` (a partial output of some run).
    """
    expected: set[Path] = set()
    target_in = root / "real.mp4"
    target_in.write_bytes(b"x")
    expected.add(target_in)
    (outside / "secret.mp4").write_bytes(b"s")
    for segments, kind in entries:
        path = root.joinpath(*segments)
        if path.exists() or path.is_symlink() or any(p.is_file() or p.is_symlink() for p in path.parents if root in p.parents):
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue
        if kind == "partial":
            path = path.with_name(f".{path.stem}.semlens-partial-123.abcdef.mp4")
            if path.exists():
                continue
            path.write_bytes(b"p")
        elif kind == "video":
            path.write_bytes(b"v")
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                expected.add(path)
        elif kind == "link_in":
            path.symlink_to(target_in)
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                expected.add(path)
        elif kind == "link_out":
            path.symlink_to(outside / "secret.mp4")
        elif kind == "dir_out":
            path.symlink_to(outside, target_is_directory=True)
    return expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(
    st.tuples(st.lists(segment, min_size=1, max_size=3),
              st.sampled_from(["video", "video", "link_in", "link_out", "dir_out", "partial"])),
    max_size=8))
def test_folder_scan_lists_only_videos_inside_the_folder(entries):
    with tempfile.TemporaryDirectory() as tmp:
        root, outside = Path(tmp) / "in", Path(tmp) / "elsewhere"
        root.mkdir()
        outside.mkdir()
        entries = [([*segs[:-1], segs[-1] + ".mp4"] if kind != "dir_out" else segs, kind) for segs, kind in entries]
        expected = _tree(root, outside, entries)
        found = find_videos(root)
        assert set(found) == expected and len(found) == len(expected)
        for video in found:
            assert inside(video.resolve(), root.resolve())
            assert inside(output_path_for(video.relative_to(root), Path(tmp) / "out"), Path(tmp) / "out")


def test_folder_run_ignores_links_out_and_writes_only_inside_the_output(tmp_path, tiny_upscaler):
    src, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    make_clip(src / "a.mp4", frames=3, size=(16, 12))
    make_clip(outside / "secret.mp4", frames=3, size=(16, 12))
    make_clip(outside / "dir" / "deep.mp4", frames=3, size=(16, 12))
    for name in ("..mp4", "...mp4", "a..b.mkv"):
        make_clip(src / "..." / name, frames=2, size=(16, 12))
    (src / "link_out.mp4").symlink_to(outside / "secret.mp4")
    (src / "dir_out").symlink_to(outside / "dir", target_is_directory=True)
    (src / "link_in.mp4").symlink_to(src / "a.mp4")
    (src / "escape.mp4").symlink_to(Path("..") / "elsewhere" / "secret.mp4")  # relative link out
    outside_before = digest(outside)
    around_before = {p.name for p in tmp_path.iterdir()}

    results = tiny_upscaler.upscale_folder(src, out, preset="ultrafast")
    rels = sorted(str(r.input.relative_to(src)) for r in results)
    assert rels == sorted([".../..mp4", ".../...mp4", ".../a..b.mkv", "a.mp4", "link_in.mp4"])
    assert all(r.status == "done" for r in results)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == rels  # mirrored, nothing else
    assert len(read_frames(out / "link_in.mp4")[0]) == 3
    assert digest(outside) == outside_before
    assert {p.name for p in tmp_path.iterdir()} == around_before | {"out"}  # nothing written beside
    assert partials_under(tmp_path) == []


def test_avi_inputs_of_a_folder_become_mkv_outputs():
    assert output_path_for(Path("a/clip.AVI"), Path("/srv/out")) == Path("/srv/out/a/clip.mkv")
    assert output_path_for(Path("a/clip.mov"), Path("/srv/out")) == Path("/srv/out/a/clip.mov")
