"""`semlens info` and semlens.describe: streams, frame count, VFR, bit depth, rotation, tracks, and
an estimate measured on a few frames."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from clips import make_clip, make_image_folder, truncate_file
from conftest import invoke_cli

from semlens.describe import describe_file, estimate_run
from semlens.upscaler import SemanticLensUpscaler
from semlens.windows import plan_windows

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vfr_clip_is_reported_with_its_rate_range(tmp_path):
    # gaps of 1 to 3 ticks of 1/30 s: 30 fps down to 10 fps
    stamps = [0, 1, 2, 5, 6, 8, 9, 10]
    clip = make_clip(tmp_path / "vfr.mp4", frames=len(stamps), size=(32, 24), fps=30, pts=stamps)
    report = describe_file(clip)
    assert report.vfr
    assert report.frame_count == len(stamps)
    assert report.min_fps == pytest.approx(10, rel=0.02)
    assert report.max_fps == pytest.approx(30, rel=0.02)
    out = invoke_cli(["info", str(clip), "--no-estimate"])
    assert out.exit_code == 0, out.stderr
    assert "variable, 10 to 30 fps (average 21)" in out.stdout  # 7 gaps in 1/3 s


def test_constant_rate_in_a_millisecond_time_base_is_not_vfr(tmp_path):
    clip = make_clip(tmp_path / "ntsc.mkv", frames=10, size=(32, 24), fps=Fraction(30000, 1001))
    report = describe_file(clip)
    assert not report.vfr
    assert report.frame_count == 10


def test_ten_bit_rotated_clip_with_audio_and_subtitles(tmp_path):
    clip = make_clip(tmp_path / "deep.mkv", frames=6, size=(32, 24), pix_fmt="yuv420p10le", codec="libx265",
                     rotation=90, audio=True, subtitles=True)
    report = describe_file(clip)
    d = report.to_dict()
    assert (d["bit_depth"], d["pix_fmt"], d["codec"]) == (10, "yuv420p10le", "hevc")
    assert d["rotation"] == 90
    assert d["frame_count"] == 6 and not d["vfr"] and d["fps"] == 25
    kinds = [(t["kind"], t["codec"], t["language"]) for t in d["tracks"]]
    assert kinds == [("video", "hevc", None), ("audio", "aac", "eng"), ("subtitle", "subrip", "fra")]
    assert "48000 Hz mono" in d["tracks"][1]["detail"]
    assert report.aux_bytes > 0
    out = invoke_cli(["info", str(clip), "--no-estimate"])
    assert out.exit_code == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "video:      hevc, 32x24, yuv420p10le (10-bit)" in lines
    assert any(line.startswith("rotation:   90 degrees") for line in lines)
    assert "audio:      #1 aac, 48000 Hz mono [eng]" in lines
    assert "subtitle:   #2 subrip [fra]" in lines


def test_json_output_with_an_estimate(tmp_path, tiny_x2_path):
    clip = make_clip(tmp_path / "in.mp4", frames=10, size=(32, 24), audio=True)
    out = invoke_cli(["info", str(clip), "--model", str(tiny_x2_path), "--device", "cpu", "--frames", "3",
                      "--preset", "ultrafast", "--json"])
    assert out.exit_code == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["container"].startswith("mov,mp4") and d["frame_count"] == 10 and d["duration"] == pytest.approx(0.4)
    assert [t["kind"] for t in d["tracks"]] == ["video", "audio"]
    est = d["estimate"]
    assert (est["output_width"], est["output_height"], est["scale"]) == (64, 48, 2)
    assert (est["frames"], est["sample_frames"]) == (10, 3)
    # the upscaling time scales with the frames the windows read (the model's window and overlap)
    settings = SemanticLensUpscaler.from_pretrained(str(tiny_x2_path), device="cpu").settings
    read = [sum(len(w.indices) for w in plan_windows(n, settings.window, settings.overlap)) for n in (3, 10)]
    assert [est["sample_frames_read"], est["frames_read"]] == read and read[0] < read[1]
    assert est["seconds"] == pytest.approx(est["upscale_seconds"] / read[0] * read[1] + est["encode_seconds"] / 3 * 10)
    assert est["output_bytes"] > 0 and "first 3 frames" in est["method"]


def test_estimate_extrapolates_the_sample(tmp_path, tiny_upscaler):
    clip = make_clip(tmp_path / "in.mkv", frames=8, size=(32, 24), audio=True)
    report = describe_file(clip)
    est = estimate_run(tiny_upscaler, report, sample_frames=4, preset="ultrafast")
    assert est.sample_frames == 4 and est.frames == 8
    # output bytes: twice the sample's video bytes plus the copied audio
    assert est.output_bytes > report.aux_bytes
    whole = estimate_run(tiny_upscaler, report, sample_frames=8, preset="ultrafast")
    assert whole.sample_frames == 8
    assert whole.output_bytes - report.aux_bytes < est.output_bytes - report.aux_bytes  # one key frame in 8, not 2


def test_image_folder_and_text_estimate(tmp_path, tiny_x2_path):
    folder = tmp_path / "frames"
    make_image_folder(folder, frames=3, size=(32, 24))
    out = invoke_cli(["info", str(folder), "--model", str(tiny_x2_path), "--device", "cpu", "--frames", "2",
                      "--preset", "ultrafast"])
    assert out.exit_code == 0, out.stderr
    assert "frames:     3" in out.stdout
    assert "estimate:   test-tiny-x2 x2 on cpu: 64x48" in out.stdout
    assert "measured:   upscaled the first 2 frames" in out.stdout


def test_missing_input_is_exit_3(tmp_path):
    out = invoke_cli(["info", str(tmp_path / "nope.mp4")])
    assert out.exit_code == 3
    assert out.stderr.startswith("error:")


def _index_first(src, dst):
    """``src`` remuxed into an mp4 whose index (moov) comes first: cut short, it still opens."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_file_cut_short_is_said_before_any_run(tmp_path, suffix):
    whole = make_clip(tmp_path / "whole.mkv", frames=40, size=(32, 24))
    if suffix == ".mp4":
        whole = _index_first(whole, tmp_path / "whole.mp4")
    assert describe_file(whole).damage is None
    out = invoke_cli(["info", str(whole), "--no-estimate"])
    assert out.exit_code == 0 and "warning" not in out.stderr
    cut = truncate_file(whole, 0.5, tmp_path / f"cut{suffix}")
    report = describe_file(cut)
    assert report.damage is not None and report.frame_count < 40
    out = invoke_cli(["info", str(cut), "--no-estimate", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["damage"] == report.damage
    notes = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("warning: cut") and "truncated or damaged" in notes[0]
