"""Atomic output: no half-written file at the destination, the input never overwritten."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from clips import make_clip, pattern_frame

from semlens.errors import OutputError, OutputExistsError
from semlens.io import (
    PARTIAL_MARKER,
    VideoWriter,
    atomic_output,
    check_output_path,
    find_partials,
    open_source,
    partial_path,
    probe,
    remove_stale_partials,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if PARTIAL_MARKER in p.name)


def test_temp_path_is_beside_dest_and_keeps_extension(tmp_path):
    dest = tmp_path / "movie.final.mkv"
    tmp = partial_path(dest)
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".movie.final" + PARTIAL_MARKER)
    assert tmp.suffix == ".mkv"


def test_success_renames_into_place(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=4)
    dest = tmp_path / "nested" / "deeper" / "out.mp4"  # parents are created
    with open_source(src) as reader, atomic_output(dest, source=src) as tmp:
        assert tmp != dest and tmp.parent == dest.parent and tmp.suffix == ".mp4"
        with VideoWriter(tmp, source=reader.info, source_path=src, width=64, height=48) as writer:
            for frame in reader:
                writer.write(frame.image, frame.pts)
        assert not dest.exists()  # nothing at the destination until the block succeeds
    assert dest.exists() and probe(dest).frame_count == 4
    assert _leftovers(dest.parent) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_mid_write_leaves_nothing(tmp_path, error):
    dest = tmp_path / "out.mp4"
    with pytest.raises(error):
        with atomic_output(dest) as tmp:
            with VideoWriter(tmp, width=64, height=48, preset="ultrafast") as writer:
                for i in range(40):
                    writer.write(pattern_frame(i))
                assert writer.frames_written == 40 and tmp.exists()  # really mid-write
                raise error("boom")
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_exception_mid_write_of_image_folder(tmp_path):
    from semlens.io import ImageSequenceWriter

    dest = tmp_path / "frames"
    with pytest.raises(RuntimeError):
        with atomic_output(dest, is_dir=True) as tmp:
            assert tmp.is_dir()
            with ImageSequenceWriter(tmp) as writer:
                writer.write(pattern_frame(0))
                raise RuntimeError("boom")
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_existing_output_refused_unless_overwrite(tmp_path):
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists"):
        with atomic_output(dest):
            pass  # pragma: no cover
    assert dest.read_bytes() == b"old"
    with atomic_output(dest, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_overwrite_of_a_folder_output(tmp_path):
    dest = tmp_path / "frames"
    dest.mkdir()
    (dest / "frame_000009.png").write_bytes(b"x")  # frames an earlier run wrote
    with atomic_output(dest, overwrite=True, is_dir=True) as tmp:
        (tmp / "frame_000001.png").write_bytes(b"y")
    assert sorted(p.name for p in dest.iterdir()) == ["frame_000001.png"]
    assert _leftovers(tmp_path) == []
    # A folder with anything else in it is not replaced: replacing it would delete that too.
    (dest / "old.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="'old.png'"):
        with atomic_output(dest, overwrite=True, is_dir=True):
            pass  # pragma: no cover
    assert sorted(p.name for p in dest.iterdir()) == ["frame_000001.png", "old.png"]
    assert _leftovers(tmp_path) == []


def test_output_equal_to_input_refused(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=2)
    before = src.read_bytes()
    for same in (src, tmp_path / "." / "in.mp4"):
        with pytest.raises(OutputError, match="is the input"):
            with atomic_output(same, overwrite=True, source=src):
                pass  # pragma: no cover
    link = tmp_path / "link.mp4"
    os.link(src, link)  # same file under another name
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(link, source=src, overwrite=True)
    symlink = tmp_path / "sym.mp4"
    symlink.symlink_to(src)
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(symlink, source=src, overwrite=True)
    assert src.read_bytes() == before


def test_parent_that_is_a_file_gives_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError):
        with atomic_output(blocker / "out.mp4"):
            pass  # pragma: no cover


def _try_as_nobody(dest: Path) -> str:
    """Run atomic_output(dest) in a forked child with root's privileges dropped; return its verdict."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        verdict = "no error"
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            try:
                with atomic_output(dest):
                    pass
            except OutputError as exc:
                verdict = f"OutputError: {exc}"
            except BaseException as exc:  # reported to the parent
                verdict = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_fd, verdict.encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        verdict = fh.read().decode()
    os.waitpid(pid, 0)
    return verdict


def test_read_only_folder_gives_clear_error():
    base = Path(tempfile.mkdtemp(prefix="semlens-ro-"))  # outside pytest's root-only tmp tree
    folder = base / "ro"
    try:
        base.chmod(0o755)
        folder.mkdir()
        folder.chmod(0o555)
        if os.geteuid() != 0:
            with pytest.raises(OutputError, match="permission denied"):
                with atomic_output(folder / "out.mp4"):
                    pass  # pragma: no cover
        else:  # root ignores permission bits: try again as an unprivileged user
            verdict = _try_as_nobody(folder / "out.mp4")
            assert verdict.startswith("OutputError:") and "permission denied" in verdict, verdict
            verdict = _try_as_nobody(folder / "sub" / "out.mp4")  # cannot create the parent either
            assert verdict.startswith("OutputError:") and "permission denied" in verdict, verdict
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_remove_stale_partials(tmp_path):
    dest = tmp_path / "out.mp4"
    dead = partial_path(dest, pid=_dead_pid())
    dead.write_bytes(b"half a video")
    live = partial_path(dest)  # this process: a run still in progress
    live.write_bytes(b"in progress")
    other = partial_path(tmp_path / "other.mp4", pid=_dead_pid())
    other.write_bytes(b"x")
    folder = partial_path(tmp_path / "frames", pid=_dead_pid())
    folder.mkdir()
    (folder / "frame_000001.png").write_bytes(b"x")

    assert set(find_partials(dest)) == {dead, live}
    assert remove_stale_partials(dest) == [dead]
    assert not dead.exists() and live.exists() and other.exists()

    removed = remove_stale_partials(folder=tmp_path)
    assert set(removed) == {other, folder}
    assert live.exists() and not folder.exists()
    assert remove_stale_partials(dest, include_live=True) == [live]
    assert _leftovers(tmp_path) == []


def test_partial_is_valid_while_writing_then_gone(tmp_path):
    """A partial never has the final name, so a crashed run cannot be mistaken for a finished one."""
    dest = tmp_path / "out.mkv"
    with atomic_output(dest) as tmp:
        with VideoWriter(tmp, width=32, height=16, codec="ffv1") as writer:
            writer.write(np.zeros((16, 32, 3), np.uint8))
        assert tmp.exists() and not dest.exists()
        assert find_partials(dest) == [tmp]
    assert dest.exists() and find_partials(dest) == []
