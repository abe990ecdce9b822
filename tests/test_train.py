"""Training recipe, synthetic data, metrics and the evaluation command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semlens.evaluate import bicubic_frames, evaluate_clip, lanczos_frames
from semlens.metrics import psnr_y, rgb_to_y, ssim_y
from semlens.train.data import ClipSampler
from semlens.train.degrade import bicubic_degrade
from semlens.train.loop import TrainConfig, learning_rate, train
from semlens.train.synth import MotionConfig, synthetic_clip


def photos() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    smooth = torch.stack([ys, xs, (ys + xs) / 2])
    return [smooth, torch.rand(3, 96, 96, generator=gen) * 0.5 + smooth * 0.5]


def test_synthetic_clip_masks_follow_its_layers() -> None:
    bg = torch.zeros(3, 96, 96)
    obj = torch.ones(3, 64, 64)  # a white object over a black background
    clip, masks = synthetic_clip(bg, [obj], 4, 48, torch.Generator().manual_seed(1),
                                 MotionConfig(max_objects=1, object_speed=3.0))
    assert clip.shape == (4, 3, 48, 48) and masks.shape == (4, 48, 48)
    assert (masks == 1).any()
    inside = clip.mean(1)[masks == 1]
    outside = clip.mean(1)[masks == 0]
    assert inside.mean() > 0.7 and outside.mean() < 0.3


def test_sampler_is_a_pure_function_of_seed_and_index() -> None:
    s = ClipSampler(photos(), [], scale=2, patch=8, frames=3, batch=2, seed=7)
    a, b = s.batch_at(5), s.batch_at(5)
    assert torch.equal(a.hr, b.hr) and torch.equal(a.lr, b.lr)
    assert not torch.equal(a.hr, s.batch_at(6).hr)
    assert a.hr.shape == (2, 3, 3, 16, 16) and a.lr.shape == (2, 3, 3, 8, 8)


def test_sampler_makes_every_tensor_of_a_batch_on_its_device() -> None:
    """Clips filmed from photos (with objects), cut from footage, flipped and downscaled where the
    sampler says ("meta": shapes only, and any tensor left on the CPU would fail to mix with them)."""
    video = torch.randint(0, 256, (6, 3, 40, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    kwargs = dict(scale=2, patch=8, frames=3, batch=6, video_fraction=0.5, seed=2,
                  motion=MotionConfig(max_objects=2, object_size=(0.3, 0.6)))
    cpu = ClipSampler(photos(), [video], **kwargs).batch_at(1)
    meta = ClipSampler(photos(), [video], **kwargs, device="meta").batch_at(1)
    assert cpu.synthetic is not None and cpu.synthetic.any() and not cpu.synthetic.all()
    for name in ("hr", "lr", "masks"):
        assert getattr(meta, name).device.type == "meta"
        assert getattr(meta, name).shape == getattr(cpu, name).shape
        assert getattr(meta, name).dtype == getattr(cpu, name).dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_sampler_makes_the_batches_of_the_cpu_one() -> None:
    """The same clips (the random draws stay on the CPU), up to the GPU's arithmetic; the
    compression step runs on the CPU and comes back."""
    from semlens.train.degrade import parse_random

    video = torch.randint(0, 256, (6, 3, 40, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    kwargs = dict(scale=2, patch=8, frames=3, batch=6, video_fraction=0.5, seed=2,
                  degradation=parse_random("random:compress=1.0,crf=18-30,blur=0,noise=0"))
    cpu = ClipSampler(photos(), [video], **kwargs).batch_at(3)
    gpu = ClipSampler(photos(), [video], **kwargs, device="cuda").batch_at(3)
    assert gpu.hr.is_cuda and gpu.lr.is_cuda and gpu.masks.is_cuda
    assert float((gpu.hr.cpu() - cpu.hr).abs().max()) <= 2 / 255
    assert float((gpu.masks.cpu() != cpu.masks).float().mean()) < 0.01
    assert float((gpu.lr.cpu() - cpu.lr).abs().mean()) < 2 / 255


def test_bi_degradation_is_bicubic_antialiased_and_8_bit() -> None:
    hr = torch.rand(2, 3, 16, 12)
    lr = bicubic_degrade(hr, 4)
    ref = torch.nn.functional.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    assert torch.allclose(lr, (ref * 255).round() / 255)


def test_a_few_steps_reduce_the_loss_and_resume(tmp_path) -> None:
    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=3, batch=2, seed=0)
    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, iterations=24, batch=2, patch=8,
                      frames=3, warmup=2, checkpoint_every=12, lr=3e-3)
    train(cfg, tmp_path / "run", sampler=sampler, quiet=True, stop_after=12)
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "model.safetensors").exists()
    final = train(cfg, tmp_path / "run", sampler=sampler, quiet=True)
    assert final.exists()
    import json

    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == list(range(1, 25))
    first, last = np.mean([r["loss"] for r in log[:4]]), np.mean([r["loss"] for r in log[-4:]])
    assert last < first
    # An uninterrupted run gives the same weights (the schedule and data resume exactly).
    straight = train(cfg, tmp_path / "straight", sampler=sampler, quiet=True)
    from safetensors.torch import load_file

    a, b = load_file(str(final)), load_file(str(straight))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    from semlens.hub import load_model

    loaded = load_model(final)
    assert loaded.scale == 2
    # The recorded inference window is the training clip length (3 frames), not a fixed 12.
    assert (loaded.window, loaded.overlap) == (3, 1)
    assert loaded.meta["train_frames"] == 3 and loaded.meta["window_basis"] == "training clip length"


def test_resume_refuses_another_configuration(tmp_path) -> None:
    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=2, batch=1, seed=0)
    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, iterations=2, batch=1, patch=8, frames=2,
                      warmup=1, checkpoint_every=1)
    train(cfg, tmp_path, sampler=sampler, quiet=True, stop_after=1)
    with pytest.raises(ValueError, match="another configuration"):
        train(TrainConfig(**{**cfg.__dict__, "lr": 1.0}), tmp_path, sampler=sampler, quiet=True)


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(iterations=100, warmup=10, lr=1e-3, min_lr=1e-5)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10) == pytest.approx(1e-3)
    assert learning_rate(cfg, 99) == pytest.approx(1e-5, abs=1e-6)


def test_psnr_and_ssim_match_reference_values() -> None:
    a = torch.zeros(3, 8, 8)
    b = a.clone()
    b[0] = 10 / 255  # Y differs by 65.481 * 10 / 255 everywhere
    mse = (65.481 * 10 / 255) ** 2
    assert psnr_y(a, b) == pytest.approx(10 * np.log10(255**2 / mse), rel=1e-6)
    assert rgb_to_y(torch.ones(3, 1, 1)).item() == pytest.approx(235.0, abs=1e-3)
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim_y(img, img) == pytest.approx(1.0)
    assert ssim_y(img, 1 - img) < 0.2
    # SSIM against a direct computation on one 11x11 window at the centre of constant images.
    c = torch.full((3, 11, 11), 0.5)
    d = torch.full((3, 11, 11), 0.25)
    ya, yb = rgb_to_y(c).mean().item(), rgb_to_y(d).mean().item()
    c1 = (0.01 * 255) ** 2
    assert ssim_y(c, d) == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1), rel=1e-6)


def test_eval_with_bicubic_as_the_model_reports_bicubic_psnr() -> None:
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(128, 40, (32, 48, 3)), 0, 255).astype(np.uint8) for _ in range(3)]
    score = evaluate_clip("noise", lambda: iter(frames), 2,
                          {"bicubic": bicubic_frames(2), "model": bicubic_frames(2), "lanczos": lanczos_frames(2)})
    assert score.frames == 3
    assert score.psnr["model"] == score.psnr["bicubic"]
    # Independent reference: degrade, upscale with torch bicubic, PSNR on Y with a 2 px border.
    ref = []
    for f in frames:
        hr = torch.from_numpy(f).permute(2, 0, 1).float() / 255
        lr = bicubic_degrade(hr, 2)
        up = torch.nn.functional.interpolate(lr[None], scale_factor=2, mode="bicubic")[0].clamp(0, 1)
        up = (up * 255).round() / 255
        ya, yb = rgb_to_y(up.double())[2:-2, 2:-2], rgb_to_y(hr.double())[2:-2, 2:-2]
        ref.append(10 * np.log10(255**2 / ((ya - yb) ** 2).mean().item()))
    assert score.psnr["bicubic"] == pytest.approx(float(np.mean(ref)), abs=1e-6)


def test_tpsnr_measures_frame_to_frame_change_against_the_truth() -> None:
    from semlens.metrics import temporal_sq_error_y, tpsnr_from_errors

    rng = np.random.default_rng(1)
    frames = [np.clip(rng.normal(128, 30, (24, 24, 3)), 0, 255).astype(np.uint8) for _ in range(4)]

    # A constant offset on every frame changes no difference: tPSNR is perfect though PSNR is not.
    score = evaluate_clip("c", lambda: iter(frames), 2, {"bicubic": bicubic_frames(2)})
    a, b = torch.full((3, 8, 8), 0.5), torch.full((3, 8, 8), 0.25)
    assert temporal_sq_error_y(a, a + 0.1, b, b + 0.1) == pytest.approx(0.0, abs=1e-9)
    # A flicker of one level of Y in every other frame: MSE 1 on the Y scale per pair -> 48.13 dB.
    step = 1 / 255 / (0.299 * 219 / 255 + 0.587 * 219 / 255 + 0.114 * 219 / 255)
    err = temporal_sq_error_y(a, a + step, b, b)
    assert err == pytest.approx(1.0, rel=1e-3)
    assert tpsnr_from_errors([err, err]) == pytest.approx(10 * np.log10(255**2), rel=1e-3)
    assert score.tpsnr["bicubic"] is not None and np.isfinite(score.tpsnr["bicubic"])
    single = evaluate_clip("one", lambda: iter(frames[:1]), 2, {"bicubic": bicubic_frames(2)})
    assert single.tpsnr["bicubic"] is None


def test_card_ablation_section_is_replaced_not_duplicated() -> None:
    from semlens.train.card import render_ablations, replace_ablations

    def report(model: float) -> dict:
        return {"model": "m", "mean": {"psnr": {"bicubic": 30.0, "m": model}, "ssim": {"bicubic": 0.8, "m": 0.9}}}

    card = "# card\n\n## Evaluation\n\ntext\n\n## Ablations (old)\n\n| old | table |\n\nold note\n"
    section = render_ablations({"T=7": report(32.5), "T=1": report(31.25)}, "semlens train ...", "Ablations (new)")
    new = replace_ablations(card, section, "The note.")
    assert new.startswith("# card\n\n## Evaluation\n\ntext\n\n## Ablations (new)\n")
    assert "old" not in new and new.count("## Ablations") == 1
    assert "| T=7 | 32.50 | +2.50 | 0.9000 |" in new and "| T=1 | 31.25 | +1.25 | 0.9000 |" in new
    assert new.endswith("The note.\n")
    assert replace_ablations("# card\n", section).count("## Ablations (new)") == 1


def test_card_tables_are_rendered_again_from_new_evaluations_and_the_prose_stays(tmp_path) -> None:
    import json
    import subprocess
    import sys

    from semlens.train.card import refresh_tables

    def report(value: float, name: str = "m") -> dict:
        def scores() -> dict:
            return {"psnr": {"bicubic": 30.0, name: value}, "ssim": {"bicubic": 0.8, name: 0.9},
                    "tpsnr": {"bicubic": 31.0, name: 32.0}}

        return {"model": name, "clips": [{"clip": "a.mp4", "frames": 3, **scores()}], "mean": scores()}

    card = ("# m\n\n## Evaluation on the held-out set\n\nCommand: `x`.\n\n| clip | frames | bicubic | m |\n|---|---|---|---|\n"
            "| a.mp4 | 3 | old | old |\n| mean | | old | old |\n\nGain over bicubic: **+9.99 dB** PSNR-Y on average.\n\n"
            "## Compressed input: CRF 23\n\n| clip | frames | bicubic | m |\n|---|---|---|---|\n| mean | | old | old |\n\n"
            "Gain over bicubic on the same decoded input: **+9.99 dB** PSNR-Y.\n\n## Notes\n\nSays 9.99.\n")
    new = refresh_tables(card, {"Evaluation on the held-out set": report(32.5), "Compressed input: CRF 23": report(31.0)})
    assert "old" not in new and new.count("| a.mp4 | 3 | 30.00 / 0.8000 / 31.00 |") == 2
    assert "Gain over bicubic: **+2.50 dB** PSNR-Y on average." in new
    assert "Gain over bicubic on the same decoded input: **+1.00 dB** PSNR-Y." in new
    assert new.endswith("## Notes\n\nSays 9.99.\n") and new.startswith("# m\n\n## Evaluation on the held-out set\n\nCommand: `x`.")
    with pytest.raises(ValueError, match="no section"):
        refresh_tables(card, {"Missing": report(1.0)})
    # The command line does the same on a card file.
    path, rep = tmp_path / "card.md", tmp_path / "eval.json"
    path.write_text(card)
    rep.write_text(json.dumps(report(32.5)))
    subprocess.run([sys.executable, "-m", "semlens.train.card", str(path),
                    "--tables-only", f"Evaluation on the held-out set={rep}"], check=True, capture_output=True)
    assert "Gain over bicubic: **+2.50 dB** PSNR-Y on average." in path.read_text()
    assert "Gain over bicubic on the same decoded input: **+9.99 dB** PSNR-Y." in path.read_text()
    # Another model's column beside the card's own (the default beside a real-footage model).
    other = report(31.5, "d")
    (tmp_path / "other.json").write_text(json.dumps(other))
    subprocess.run([sys.executable, "-m", "semlens.train.card", str(path), "--tables-only",
                    f"Evaluation on the held-out set={rep}+{tmp_path / 'other.json'}"], check=True, capture_output=True)
    text = path.read_text()
    assert "| clip | frames | bicubic | d | m |" in text
    assert "| mean | | **30.00** / 0.8000 / 31.00 | **31.50** / 0.9000 / 32.00 | **32.50** / 0.9000 / 32.00 |" in text
    assert "Gain over bicubic: **+2.50 dB** PSNR-Y on average." in text
    other["clips"][0]["frames"] = 2
    from semlens.train.card import with_columns

    with pytest.raises(ValueError, match="same frames"):
        with_columns(report(32.5), other)
    with pytest.raises(ValueError, match="same model name"):  # one column would hide the other
        with_columns(report(32.5), report(31.0))

def test_card_ablation_rows_show_each_clip_and_flicker_when_every_report_has_them() -> None:
    from semlens.train.card import render_ablations

    def report(name: str, a: float, b: float, tpsnr: float | None = 33.0) -> dict:
        clips = [{"clip": "a.mp4", "psnr": {"bicubic": 30.0, name: a}},
                 {"clip": "b.mp4", "psnr": {"bicubic": 28.0, name: b}}]
        mean = {"psnr": {"bicubic": 29.0, name: (a + b) / 2}, "ssim": {"bicubic": 0.8, name: 0.9}}
        if tpsnr is not None:
            mean["tpsnr"] = {"bicubic": 31.0, name: tpsnr}
        return {"model": name, "clips": clips, "mean": mean}

    rows = render_ablations({"full": report("m", 32.0, 30.5), "T=1": report("runs/t1/model", 31.5, 30.25)}, "cmd")
    assert rows[4] == "| variant | a.mp4 | b.mp4 | mean PSNR-Y | gain over bicubic | mean SSIM-Y | mean tPSNR-Y |"
    assert "| full | 32.00 | 30.50 | 31.25 | +2.25 | 0.9000 | 33.00 |" in rows
    assert "| T=1 | 31.50 | 30.25 | 30.88 | +1.88 | 0.9000 | 33.00 |" in rows
    # A report without tPSNR, or with other clips, drops those columns for every row.
    rows = render_ablations({"full": report("m", 32.0, 30.5), "old": report("o", 31.0, 30.0, None)}, "cmd")
    assert rows[4] == "| variant | a.mp4 | b.mp4 | mean PSNR-Y | gain over bicubic | mean SSIM-Y |"
    other = report("x", 31.0, 30.0)
    other["clips"] = other["clips"][:1]
    rows = render_ablations({"full": report("m", 32.0, 30.5), "other": other}, "cmd")
    assert rows[4] == "| variant | mean PSNR-Y | gain over bicubic | mean SSIM-Y | mean tPSNR-Y |"


@pytest.mark.parametrize(("frames", "window", "overlap", "expected"), [
    (1, None, None, (1, 0)), (2, None, None, (2, 0)), (7, None, None, (7, 2)), (7, 12, None, (12, 2)),
    (7, 12, 3, (12, 3)), (1, 9, None, (9, 2)),
])
def test_inference_window_follows_training_unless_given(frames, window, overlap, expected) -> None:
    from semlens.train.export import inference_window

    assert inference_window(frames, window, overlap) == expected


def test_export_records_a_given_window_and_refuses_one_that_emits_nothing(tmp_path) -> None:
    import json

    from safetensors import safe_open

    from semlens.train.export import save_trained
    from semlens.train.loop import build_model

    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, frames=5)
    model = build_model(cfg)
    save_trained(tmp_path / "m.safetensors", model, cfg, 1.0, window=10, overlap=3)
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["semlens_config"])
    assert (meta["window"], meta["overlap"], meta["train_frames"]) == (10, 3, 5)
    assert meta["window_basis"] == "given at export"
    with pytest.raises(ValueError, match="emits no frame"):
        save_trained(tmp_path / "bad.safetensors", model, cfg, 1.0, window=4, overlap=2)


def test_a_model_file_is_written_again_with_another_window_and_the_same_tensors(tmp_path) -> None:
    import json
    import subprocess
    import sys

    from safetensors import safe_open

    from semlens.hub import load_model
    from semlens.train.export import save_trained, set_inference_window
    from semlens.train.loop import build_model

    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, frames=5)
    save_trained(tmp_path / "m.safetensors", build_model(cfg), cfg, 1.0)
    subprocess.run([sys.executable, "-m", "semlens.train.export", str(tmp_path / "m.safetensors"),
                    str(tmp_path / "o1.safetensors"), "--overlap", "1"], check=True, capture_output=True)
    metas, tensors = {}, {}
    for name in ("m", "o1"):
        with safe_open(str(tmp_path / f"{name}.safetensors"), "pt") as f:
            metas[name] = json.loads(f.metadata()["semlens_config"])
            tensors[name] = {k: f.get_tensor(k) for k in f.keys()}
    assert (metas["m"]["window"], metas["m"]["overlap"]) == (5, 2)
    assert (metas["o1"]["window"], metas["o1"]["overlap"], metas["o1"]["window_basis"]) == (5, 1, "given at export")
    assert {k: v for k, v in metas["o1"].items() if k not in ("overlap", "window_basis")} == \
        {k: v for k, v in metas["m"].items() if k not in ("overlap", "window_basis")}
    assert tensors["o1"].keys() == tensors["m"].keys()
    assert all(torch.equal(tensors["o1"][k], v) for k, v in tensors["m"].items())
    assert (load_model(tmp_path / "o1.safetensors").window, load_model(tmp_path / "o1.safetensors").overlap) == (5, 1)
    with pytest.raises(ValueError, match="emits no frame"):
        set_inference_window(tmp_path / "m.safetensors", tmp_path / "bad.safetensors", window=4, overlap=2)
    assert not list(tmp_path.glob("bad*"))

def test_train_command_rejects_a_window_that_emits_nothing(tmp_path) -> None:
    from click.testing import CliRunner

    from semlens_cli.main import cli

    result = CliRunner().invoke(cli, ["train", str(tmp_path / "run"), "--frames", "3", "--window", "4",
                                      "--overlap", "2"])
    assert result.exit_code == 2 and "emits no frame" in result.output
    assert not (tmp_path / "run").exists()


def test_run_summary_keeps_what_a_card_needs(tmp_path) -> None:
    import hashlib
    import json
    import subprocess
    import sys

    from semlens.train.card import summarize_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"iterations": 30, "frames": 3}))
    lines = [{"iteration": i, "loss": 1.0 / i, "smooth_loss": 2.0 / i, "elapsed": 0.5 * i} for i in range(1, 31)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = summarize_run(run, points=4)
    assert summary["iterations"] == 30 and summary["wall_time_seconds"] == 15.0
    assert summary["final_smooth_loss"] == 2.0 / 30 and summary["weights"] is None
    assert [p[0] for p in summary["smooth_loss_curve"]] == [1, 11, 20, 30]
    (run / "model.safetensors").write_bytes(b"weights")
    out = tmp_path / "summary.json"
    subprocess.run([sys.executable, "-m", "semlens.train.card", "--summary", str(run), str(out)], check=True)
    written = json.loads(out.read_text())
    assert written["weights"] == {"file": "model.safetensors", "bytes": 7,
                                  "sha256": hashlib.sha256(b"weights").hexdigest()}


def test_true_masks_reach_the_synthetic_clips_of_part_of_the_batches() -> None:
    from semlens.semantics.lite import LiteExtractor
    from semlens.train.loop import batch_semantics

    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=2, batch=2, seed=3)
    batch = sampler.batch_at(0)
    assert batch.synthetic is not None and bool(batch.synthetic.all())
    true = batch.masks[..., 1::2, 1::2]
    always = TrainConfig(scale=2, token_source="pooled", true_mask_fraction=1.0)
    sem = batch_semantics(always, LiteExtractor(max_instances=4), batch, 0)
    assert torch.equal(sem.masks, true)
    never = TrainConfig(scale=2, token_source="pooled", true_mask_fraction=0.0)
    assert torch.equal(batch_semantics(never, LiteExtractor(max_instances=4), batch, 0).masks,
                       LiteExtractor(max_instances=4)(batch.lr).masks)
    # The default for pooled models is half of the batches (a pure function of seed and step).
    half = TrainConfig(scale=2, token_source="pooled")
    assert half.mask_fraction == 0.5 and TrainConfig().mask_fraction == 0.0
    picked = [torch.equal(batch_semantics(half, LiteExtractor(max_instances=4), batch, i).masks, true)
              for i in range(40)]
    assert 8 < sum(picked) < 32
    # Real footage has no true masks: its clips keep the extractor's.
    batch.synthetic = torch.tensor([True, False])
    mixed = batch_semantics(always, LiteExtractor(max_instances=4), batch, 0)
    assert torch.equal(mixed.masks[0], true[0])
    assert torch.equal(mixed.masks[1], LiteExtractor(max_instances=4)(batch.lr[1:]).masks[0])
    with pytest.raises(ValueError, match="true masks"):
        TrainConfig(extractor="sam-vit-b", true_mask_fraction=0.5).check()


def test_train_command_trains_a_pooled_model(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    import semlens.train.data as data
    from semlens.hub import load_model
    from semlens_cli.main import cli

    monkeypatch.setattr(data, "builtin_sources", lambda split: (photos(), []))
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "run"), "--scale", "2", "--iterations", "2",
                                      "--batch", "2", "--patch", "8", "--frames", "2", "--token-source", "pooled",
                                      "--extractor", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    loaded = load_model(tmp_path / "run" / "model.safetensors")
    assert loaded.model.config.pooled_tokens
    assert loaded.meta["training"]["token_source"] == "pooled"
    assert loaded.meta["training"]["true_mask_fraction"] is None  # the default: half the batches


def test_warm_start_copies_every_tensor_that_fits_and_is_recorded(tmp_path) -> None:
    from semlens.hub import load_model, save_model
    from semlens.train.loop import build_model, warm_start

    source_cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8})
    torch.manual_seed(1)
    source = build_model(source_cfg)
    save_model(tmp_path / "source.safetensors", source)
    # A pooled model of another scale: the pooling and the reconstruction start fresh.
    target = build_model(TrainConfig(scale=4, overrides={"channels": 8, "token_dim": 8}, token_source="pooled"))
    loaded, fresh = warm_start(target, str(tmp_path / "source.safetensors"))
    state = target.state_dict()
    assert "extract.0.weight" in loaded and torch.equal(state["extract.0.weight"], source.state_dict()["extract.0.weight"])
    assert any(name.startswith("pooled.") for name in fresh) and "upsample.2.weight" in fresh
    assert not any(name.startswith("instance_proj") for name in state)

    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=2, batch=1, seed=0)
    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, iterations=1, batch=1, patch=8, frames=2,
                      warmup=1, lr=1e-9, init=str(tmp_path / "source.safetensors"))
    final = train(cfg, tmp_path / "run", sampler=sampler, quiet=True)
    trained = load_model(final)
    assert trained.meta["training"]["init"] == str(tmp_path / "source.safetensors")
    assert len(trained.meta["training"]["init_sha256"]) == 64
    weight = trained.model.state_dict()["extract.0.weight"]
    assert torch.allclose(weight, source.state_dict()["extract.0.weight"], atol=1e-6)


def test_sampler_motion_follows_max_motion() -> None:
    from semlens.train.loop import sampler_motion

    default = sampler_motion(TrainConfig(scale=4))
    assert (default.object_speed, default.camera_speed) == pytest.approx((10.0, 6.0))
    fast = sampler_motion(TrainConfig(scale=2, max_motion=5.0))
    assert (fast.object_speed, fast.camera_speed) == pytest.approx((10.0, 6.0))


def test_a_checkpoint_exports_as_a_model_with_its_iteration(tmp_path) -> None:
    from semlens.hub import load_model
    from semlens.train.export import export_checkpoint

    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=2, batch=1, seed=0)
    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, iterations=4, batch=1, patch=8, frames=2,
                      warmup=1, checkpoint_every=1)
    train(cfg, tmp_path / "run", sampler=sampler, quiet=True, stop_after=1)
    out = export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "step1.safetensors")
    loaded = load_model(out)
    assert loaded.meta["training"]["iterations_done"] == 1 and loaded.meta["training"]["iterations"] == 4
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state["ema"].items())
    assert not list(tmp_path.glob("*.tmp"))


def test_card_of_a_warm_started_real_footage_run_names_its_lineage_and_compressed_results(tmp_path) -> None:
    from semlens.hub import save_model
    from semlens.hub.format import read_weights
    from semlens.train.card import render_card
    from semlens.train.loop import build_model

    base_cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8})
    save_model(tmp_path / "base.safetensors", build_model(base_cfg))
    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=2, batch=1, seed=0)
    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, iterations=1, batch=1, patch=8, frames=2,
                      warmup=1, degradation="random", token_source="pooled", motion_search=4, max_motion=5.0,
                      init=str(tmp_path / "base.safetensors"))
    run = tmp_path / "run"
    train(cfg, run, sampler=sampler, quiet=True)

    def report(model: float, tpsnr: float) -> dict:
        scores = {"psnr": {"bicubic": 30.0, "model": model}, "ssim": {"bicubic": 0.8, "model": 0.9},
                  "tpsnr": {"bicubic": 31.0, "model": tpsnr}}
        return {"model": "model", "clips": [{"clip": "a.mp4", "frames": 3, **scores}], "mean": scores}

    card = render_card(run, report(32.0, 33.0), "m-x2", "semlens train ...", "semlens eval ...",
                       extras=[("Compressed input: x264 CRF 23", "semlens eval --degradation x264:crf=23", report(31.5, 30.5))])
    assert "for real footage" in card and "bicubic (BI) degradation" not in card
    assert "pooled by the network" in card and "up to 4 LR pixels" in card
    meta_sha = read_weights(run / "model.safetensors")[1]["training"]["init_sha256"]
    assert f"Warm start from `{tmp_path / 'base.safetensors'}` (sha256 `{meta_sha}`)" in card
    assert "## Compressed input: x264 CRF 23" in card and "semlens eval --degradation x264:crf=23" in card
    assert "| mean | | **30.00** / 0.8000 / 31.00 | **31.50** / 0.9000 / 30.50 |" in card
    assert "Gain over bicubic on the same decoded input: **+1.50 dB**" in card


def test_data_workers_and_bf16_autocast_train_the_same_schedule(tmp_path) -> None:
    """More data threads give exactly the weights of one (batches are a pure function of the step);
    bf16 autocast (what a CUDA run uses by default; the CPU has it too) trains to finite weights
    close to float32's, and the precision is not part of the run's configuration."""
    from safetensors.torch import load_file

    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=3, batch=2, seed=0)
    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, iterations=6, batch=2, patch=8,
                      frames=3, warmup=2, checkpoint_every=3, lr=3e-3)
    one = load_file(str(train(cfg, tmp_path / "one", sampler=sampler, quiet=True, device="cpu")))
    three = load_file(str(train(cfg, tmp_path / "three", sampler=sampler, quiet=True, device="cpu",
                                data_workers=3)))
    assert all(torch.equal(one[k], three[k]) for k in one)
    train(cfg, tmp_path / "bf16", sampler=sampler, quiet=True, device="cpu", amp="bf16", stop_after=3)
    bf16 = load_file(str(train(cfg, tmp_path / "bf16", sampler=sampler, quiet=True, device="cpu", amp="none")))
    assert all(torch.isfinite(v).all() for v in bf16.values())
    assert any(not torch.equal(one[k], bf16[k]) for k in one)  # autocast really changed the arithmetic
    drift = max(float((one[k] - bf16[k]).abs().max()) for k in one if one[k].is_floating_point())
    assert drift < 0.05


def test_semantics_are_made_in_the_data_threads_while_a_step_trains(tmp_path, monkeypatch) -> None:
    """Beyond the first batch, the extractor runs in the data threads, not in the training loop."""
    import threading

    from semlens.train import loop

    callers: list[str] = []
    real = loop.load_extractor

    def recording(name: str):
        extractor = real(name)

        class Recorded:
            def reset(self) -> None:
                extractor.reset()

            def __call__(self, frames):
                callers.append(threading.current_thread().name)
                return extractor(frames)
        return Recorded()

    monkeypatch.setattr(loop, "load_extractor", recording)
    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=3, batch=2, seed=0)
    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, iterations=4, batch=2, patch=8,
                      frames=3, warmup=1, checkpoint_every=4)
    train(cfg, tmp_path / "run", sampler=sampler, quiet=True, device="cpu", data_workers=2)
    assert len(callers) == 4
    assert callers[0] == threading.main_thread().name
    assert all(name.startswith("semlens-data") for name in callers[1:])


def test_train_device_resolution_and_refusals(monkeypatch) -> None:
    from semlens.train.loop import train_device

    assert train_device("cpu", "auto") == (torch.device("cpu"), None)
    assert train_device("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_device("auto", "auto") == (torch.device("cpu"), None)
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_device("cuda", "auto")
    with pytest.raises(ValueError, match="amp must be one of"):
        train_device("cpu", "fp8")


def test_train_command_refuses_a_device_it_cannot_use(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from semlens_cli.main import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "run"), "--iterations", "2", "--device", "cuda"])
    assert result.exit_code != 0
    assert "CUDA is not available" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_trains_and_exports_cpu_weights(tmp_path) -> None:
    from semlens.hub import load_model

    sampler = ClipSampler(photos(), [], scale=2, patch=8, frames=3, batch=2, seed=0)
    cfg = TrainConfig(scale=2, overrides={"channels": 8, "token_dim": 8}, iterations=4, batch=2, patch=8,
                      frames=3, warmup=1, checkpoint_every=2)
    final = train(cfg, tmp_path / "run", sampler=sampler, quiet=True, device="cuda", data_workers=2)
    loaded = load_model(final)
    assert all(torch.isfinite(p).all() and p.device.type == "cpu" for p in loaded.model.parameters())
    assert "threads" not in loaded.meta["training"]["machine"]  # the GPU's name is recorded


def test_the_built_in_sampler_films_where_it_is_told(monkeypatch) -> None:
    """default_sampler(cfg, device) is what train() and scripts/gpu_train.py use: its batches are
    made on that device."""
    from semlens.train import data
    from semlens.train.loop import default_sampler

    monkeypatch.setattr(data, "builtin_sources", lambda split: (photos(), []))
    cfg = TrainConfig(scale=2, patch=8, frames=3, batch=2)
    assert default_sampler(cfg).device.type == "cpu"
    assert default_sampler(cfg, "meta").batch_at(0).hr.device.type == "meta"


def test_train_only_trains_the_named_parts_and_keeps_the_rest(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    import semlens.train.data as data
    from semlens.hub import load_model, save_model
    from semlens.train.card import _architecture_lines
    from semlens.train.loop import TRAINABLE_PARTS, build_model, trainable_names
    from semlens_cli.main import cli

    base = build_model(TrainConfig(scale=2, token_source="pooled", motion_search=2))
    # Every parameter belongs to exactly one part.
    parts = [set(trainable_names(base, [part])) for part in TRAINABLE_PARTS]
    assert sum(len(p) for p in parts) == len(set().union(*parts)) == len(list(base.parameters()))
    option = next(p for p in cli.commands["train"].params if p.name == "train_only")
    assert list(option.type.choices) == list(TRAINABLE_PARTS)  # the command offers every part, and only those
    save_model(tmp_path / "base.safetensors", base)
    monkeypatch.setattr(data, "builtin_sources", lambda split: (photos(), []))
    args = ["train", str(tmp_path / "run"), "--scale", "2", "--iterations", "3", "--batch", "2", "--patch", "8",
            "--frames", "3", "--token-source", "pooled", "--extractor", "none", "--motion-search", "2",
            "--init", str(tmp_path / "base.safetensors"), "--lr", "1e-2", "--quiet",
            "--train-only", "image", "--train-only", "fuse"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    state = load_model(tmp_path / "run" / "model.safetensors").model.state_dict()
    trained = set(trainable_names(base, ["image", "fuse"]))
    assert trained and all(".align." in "." + n or ".fuse." in "." + n for n in trained)
    moved = {k for k, v in base.state_dict().items() if not torch.equal(state[k], v)}
    assert moved and moved <= trained  # the named parts learn, nothing else changes
    cfg = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert any("only `image`, `fuse`" in line for line in _architecture_lines(cfg, tmp_path / "run"))
    # A part that does not exist, or parts without a warm start, are refused before any work.
    bad = CliRunner().invoke(cli, args[:-4] + ["--train-only", "heads"])
    assert bad.exit_code != 0 and "heads" in bad.output
    cold = CliRunner().invoke(cli, ["train", str(tmp_path / "cold"), "--iterations", "1", "--train-only", "image"])
    assert cold.exit_code != 0 and "warm start" in cold.output
    assert not (tmp_path / "cold").exists()
