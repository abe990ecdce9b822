"""Does a model use its window and its instances? The same weights, scored several ways on held-out clips.

    python -m semlens.train.valset runs/valset
    python benchmarks/temporal_use.py runs/valset --scale 4 [--model NAME|PATH] [--max-frames 24]
        [--out benchmarks/results/temporal_use-x4.json]
    python benchmarks/temporal_use.py --card-table REPORT.json   (a saved report as a model card's table)

Every variant runs the *same* model on the same BI-degraded frames (``semlens.evaluate``), scored as
PSNR-Y / SSIM-Y and tPSNR-Y (PSNR of frame-to-frame differences against those of the ground truth,
a flicker measure):

- ``window``: the model as shipped (its window and overlap, its extractor);
- ``single frame``: window 1, overlap 0: every frame alone (what the window adds);
- ``centre copies``: every frame restored from a window made of copies of itself (the same
  computation as ``window`` with the neighbours' information removed);
- ``one instance``: the extractor's masks replaced by one instance covering the frame (its token
  the area-weighted mean of the instance tokens): what separating instances adds;
- ``shuffled masks``: each frame's instance ids permuted at random (seeded), so masks point at the
  wrong tokens and tracks break between frames: what *correct* instances add.

On the clips with true object masks beside them (the synthetic held-out clips) the same weights
also run with the true masks (``GivenMasks``), with one instance covering the frame, frame by
frame, and with IMAGE's attention not masked (the tokens and ISEE still see the masks). Besides
the whole frame these are scored inside the objects and ``2 x scale`` pixels around them, where an
object's own motion and what it uncovers are (a few percent of the frame: a gain there moves the
whole frame's PSNR by little; the report gives the region's share of the squared error and the
whole-frame gain a perfect object region would bring).

Gains are reported against ``window`` (negative = the variant is worse, i.e. the part pays).
``--instance-motion`` runs every variant with IMAGE's motion estimate made per instance of the masks
(``EnhancerConfig.instance_motion``), same weights; ``--motion-search R`` adds a row with reach ``R``.
Models trained without an extractor (``none``) skip the two mask variants.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import machine, write_json
from torch import Tensor

from semlens.enhancer import PixelEnhancer
from semlens.evaluate import bicubic_frames, clip_reader, evaluate, find_clips
from semlens.hub import load_extractor
from semlens.semantics.given import GivenMasks
from semlens.semantics.types import InstanceExtractor, Semantics
from semlens.upscaler import SemanticLensUpscaler


class _MaskEdit:
    """Wraps an extractor and rewrites the masks it returns (``mode``: ``one`` or ``shuffle``)."""

    def __init__(self, base: InstanceExtractor, mode: str, seed: int = 0) -> None:
        self.base, self.mode = base, mode
        self.name, self.instance_dim, self.global_dim = base.name, base.instance_dim, base.global_dim
        self.max_instances = base.max_instances
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        self.base.reset()

    def __call__(self, frames: Tensor) -> Semantics | None:
        sem = self.base(frames)
        if sem is None:
            return None
        return one_instance(sem) if self.mode == "one" else shuffled(sem, self.generator)


def one_instance(sem: Semantics) -> Semantics:
    """Every pixel in instance 1; its token per frame the area-weighted mean of the frame's tokens."""
    b, t, h, w = sem.masks.shape
    n = sem.num_instances
    area = torch.stack([(sem.masks == k + 1).sum((-2, -1)) for k in range(n)], dim=-1).float()  # (B, T, N)
    weight = area / area.sum(-1, keepdim=True).clamp_min(1)
    token = (sem.instance_tokens * weight.unsqueeze(-1)).sum(2, keepdim=True)
    return Semantics(masks=torch.ones_like(sem.masks), instance_tokens=token, global_tokens=sem.global_tokens,
                     valid=torch.ones(b, t, 1, dtype=torch.bool, device=sem.valid.device),
                     track_ids=sem.track_ids[:, :1].clamp_min(0))


def shuffled(sem: Semantics, generator: torch.Generator) -> Semantics:
    """Each frame's instance ids 1..N permuted at random (background kept)."""
    n = sem.num_instances
    masks = sem.masks.clone()
    for i in range(masks.shape[0]):
        for j in range(masks.shape[1]):
            table = torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(n, generator=generator) + 1])
            masks[i, j] = table.to(masks.device)[sem.masks[i, j].clamp(0, n)]
    return Semantics(masks=masks, instance_tokens=sem.instance_tokens, global_tokens=sem.global_tokens,
                     valid=sem.valid, track_ids=sem.track_ids)


def centre_copies(up: SemanticLensUpscaler, window: int) -> Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]:
    """Each frame restored from a window of ``window`` copies of itself (the model called directly)."""

    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        model, device = up.model, up.device
        for frame in frames:
            x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div(255)
            x = x.to(device)[None, None].expand(1, window, -1, -1, -1).contiguous()
            up.extractor.reset()
            with torch.inference_mode():
                sem = up.extractor(x)
                y = model(x, sem)[0, window // 2]
            yield (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    return run


def with_config(net: PixelEnhancer, **changes: Any) -> PixelEnhancer:
    """The same weights in a network whose configuration differs by ``changes`` (weightless
    options: ``motion_search``, ``instance_motion``)."""
    moved = PixelEnhancer(replace(net.config, **changes))
    moved.load_state_dict(net.state_dict())
    return moved.eval()


def with_motion_search(net: PixelEnhancer, reach: int) -> PixelEnhancer:
    """The same weights with IMAGE's window centred on block-matched motion up to ``reach``."""
    return with_config(net, motion_search=reach)


def with_instance_motion(net: PixelEnhancer) -> PixelEnhancer:
    """The same weights with IMAGE's motion estimate made per instance of the masks."""
    return with_config(net, instance_motion=True)


def variants(model: str | None, scale: int, motion_search: int = 0, instance_motion: bool = False) -> dict[str, Any]:
    ref = SemanticLensUpscaler.from_pretrained(model, scale=None if model else scale, device="cpu", dtype="fp32")
    if instance_motion and not ref.model.config.instance_motion:
        ref = SemanticLensUpscaler(with_instance_motion(ref.model), ref.extractor, device="cpu", dtype="fp32",
                                   name=ref.name, window=ref.settings.window, overlap=ref.settings.overlap)
    net, ext, window, overlap = ref.model, ref.extractor.name, ref.settings.window, ref.settings.overlap

    def build(extractor: Any, **kw: Any) -> SemanticLensUpscaler:
        return SemanticLensUpscaler(net, extractor, device="cpu", dtype="fp32", name=ref.name,
                                    **{"window": window, "overlap": overlap, **kw})

    out: dict[str, Any] = {
        "bicubic": bicubic_frames(ref.scale),
        "window": ref.upscale_frames,
        "single frame": build(ext, window=1, overlap=0).upscale_frames,
        "centre copies": centre_copies(build(ext), window),
    }
    if motion_search and motion_search != net.config.motion_search:
        moved = SemanticLensUpscaler(with_motion_search(net, motion_search), ext, device="cpu", dtype="fp32",
                                     name=ref.name, window=window, overlap=overlap)
        out[f"motion search {motion_search}"] = moved.upscale_frames
    if ext != "none":
        out["one instance"] = build(_MaskEdit(load_extractor(ext), "one")).upscale_frames
        out["shuffled masks"] = build(_MaskEdit(load_extractor(ext), "shuffle")).upscale_frames
    return {"name": ref.name, "scale": ref.scale, "window": window, "overlap": overlap, "extractor": ext,
            "methods": out, "upscaler": ref}


def true_mask_rows(paths: list[Path], model: str | None, scale: int, max_frames: int | None,
                   ref: SemanticLensUpscaler | None = None) -> dict[str, Any]:
    """On the clips with true object masks beside them (the synthetic held-out clips), the same
    weights driven by the true masks (:class:`GivenMasks`, taken at the LR pixel centres) and by
    one instance covering the frame; ``{}`` when no clip has masks. ``ref``: the model already loaded."""
    from semlens.train.valset import masks_path

    if ref is None:
        ref = SemanticLensUpscaler.from_pretrained(model, scale=None if model else scale, device="cpu", dtype="fp32")
    s = ref.scale
    with_masks = [p for p in paths if masks_path(p).exists()]
    if not with_masks:
        return {}
    clips = []
    for path in with_masks:
        hr = np.load(masks_path(path))
        lr = [m[s // 2::s, s // 2::s].astype(np.int64) for m in (hr if max_frames is None else hr[:max_frames])]

        slots = max(1, int(max(m.max() for m in lr)))

        def given(masks: list[np.ndarray], slots: int = slots,
                  single: bool = False) -> Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]:
            window, overlap = (1, 0) if single else (ref.settings.window, ref.settings.overlap)

            def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
                up = SemanticLensUpscaler(ref.model, GivenMasks(masks, max_instances=slots),
                                          device="cpu", dtype="fp32", name=ref.name, window=window, overlap=overlap)
                return up.upscale_frames(frames)
            return run

        methods = {"extractor masks": ref.upscale_frames, "true masks": given(lr),
                   "true masks, one instance": given([np.ones_like(m) for m in lr]),
                   "true masks, single frame": given(lr, single=True),
                   "true masks, IMAGE unmasked": image_unmasked(given(lr))}
        kept: dict[str, list[np.ndarray]] = {}
        scored = evaluate([path], s, {m: _kept(f, kept.setdefault(m, [])) for m, f in methods.items()},
                          max_frames=max_frames)
        clip = scored["clips"][0]
        truth = list(clip_reader(path, max_frames)())
        region = object_region(hr[:len(truth)], margin=2 * s, crop=s)
        frame = object_region(np.ones_like(hr[:len(truth)]), margin=0, crop=s)  # what the PSNR scores
        clip["objects"], whole = regions_psnr(kept, truth, [region, frame])
        h, w = kept["true masks"][0].shape[:2]
        clip["objects_area"] = float(region[:, :h, :w].mean())
        # The most any change inside the object region could add to the whole frame: the region's
        # share of the frame's squared error (pooled over all frames), removed.
        clip["whole_pooled"] = whole
        inside = float(region[:, :h, :w].sum() / frame[:, :h, :w].sum())
        share = inside * 10 ** ((whole["true masks, one instance"] - clip["objects"]["true masks, one instance"]) / 10)
        clip["objects_error_share"] = share
        clip["objects_ceiling_db"] = float(-10 * np.log10(max(1.0 - share, 1e-10)))
        clips.append(clip)
        print(f"{path.name}: " + ", ".join(f"{m} {clip['psnr'][m]:.3f} (objects {clip['objects'][m]:.3f})"
                                           for m in methods), file=sys.stderr)
    names = list(methods)
    mean = {m: float(np.mean([c["psnr"][m] for c in clips])) for m in names}
    objects = {m: float(np.mean([c["objects"][m] for c in clips])) for m in names}
    return {"clips": clips, "mean_psnr": mean, "objects_psnr": objects,
            "objects_area": float(np.mean([c["objects_area"] for c in clips])),
            "true_vs_one_instance_db": mean["true masks"] - mean["true masks, one instance"],
            "objects_true_vs_one_instance_db": objects["true masks"] - objects["true masks, one instance"],
            "objects_window_vs_single_db": objects["true masks"] - objects["true masks, single frame"],
            "objects_error_share": float(np.mean([c["objects_error_share"] for c in clips])),
            "objects_ceiling_db": float(np.mean([c["objects_ceiling_db"] for c in clips]))}


def image_unmasked(upscale: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]
                   ) -> Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]:
    """``upscale`` with IMAGE's attention not masked by instance (everything else still sees the
    masks: the tokens, ISEE): what the masks add through alignment alone."""
    from semlens.enhancer.image import ImplicitMaskedAlignment

    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        masked = ImplicitMaskedAlignment.forward

        def unmasked(self: ImplicitMaskedAlignment, reference: Tensor, support: Tensor, value: Tensor,
                     reference_ids: Tensor | None = None, support_ids: Tensor | None = None) -> Tensor:
            return masked(self, reference, support, value)

        ImplicitMaskedAlignment.forward = unmasked  # type: ignore[method-assign]
        try:
            yield from upscale(frames)
        finally:
            ImplicitMaskedAlignment.forward = masked  # type: ignore[method-assign]
    return run


def _kept(upscale: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]],
          into: list[np.ndarray]) -> Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]:
    """``upscale`` that also keeps a copy of every frame it gives."""
    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in upscale(frames):
            into.append(np.array(frame, copy=True))
            yield frame
    return run


def object_region(masks: np.ndarray, margin: int, crop: int) -> np.ndarray:
    """``(T, H, W)`` bool: the pixels of every object grown by ``margin`` pixels (its boundary,
    where an object and what it uncovers need their own motion), ``crop`` border pixels left out
    as the PSNR leaves them out."""
    grown = torch.nn.functional.max_pool2d(torch.from_numpy(masks > 0).float()[:, None], 2 * margin + 1,
                                           stride=1, padding=margin)[:, 0] > 0
    region = grown.numpy()
    if crop:
        region[:, :crop], region[:, -crop:], region[:, :, :crop], region[:, :, -crop:] = False, False, False, False
    return region


def region_psnr(outputs: dict[str, list[np.ndarray]], truth: list[np.ndarray], region: np.ndarray) -> dict[str, float]:
    """PSNR-Y (dB) of each method's frames over ``region`` (``(T, H, W)`` bool at the ground
    truth's size), the squared errors of all its pixels in all frames pooled."""
    return regions_psnr(outputs, truth, [region])[0]


def regions_psnr(outputs: dict[str, list[np.ndarray]], truth: list[np.ndarray],
                 regions: list[np.ndarray]) -> list[dict[str, float]]:
    """:func:`region_psnr` over each of ``regions``, each method's squared errors made once."""
    from semlens.metrics import rgb_to_y

    def y(frames: list[np.ndarray], h: int, w: int) -> Tensor:
        x = torch.from_numpy(np.stack([f[:h, :w] for f in frames])).permute(0, 3, 1, 2).double() / 255
        return rgb_to_y(x)

    scores: list[dict[str, float]] = [{} for _ in regions]
    targets: dict[tuple[int, int, int], Tensor] = {}
    for method, frames in outputs.items():
        h, w = frames[0].shape[:2]  # the model's output: the ground truth cut to a multiple of the scale
        key = (len(frames), h, w)
        if key not in targets:
            targets[key] = y(truth[:len(frames)], h, w)
        err = (y(frames, h, w) - targets[key]) ** 2
        for region, out in zip(regions, scores):
            inside = torch.from_numpy(np.ascontiguousarray(region[:len(frames), :h, :w]))
            out[method] = float(10 * np.log10(255.0**2 / max(float(err[inside].mean()), 1e-10)))
    return scores


def measure(paths: list[Path], model: str | None, scale: int, max_frames: int | None,
            motion_search: int = 0, instance_motion: bool = False) -> dict[str, Any]:
    v = variants(model, scale, motion_search, instance_motion)
    report: dict[str, Any] = {"model": v["name"], "weights_sha256": v["upscaler"].weights_sha256,
                              "scale": v["scale"], "window": v["window"],
                              "overlap": v["overlap"], "extractor": v["extractor"],
                              "instance_motion": bool(v["upscaler"].model.config.instance_motion), "clips": []}
    methods = v["methods"]
    scored = evaluate(paths, v["scale"], methods, max_frames=max_frames,
                      on_clip=lambda c: print(f"{c.clip}: " + ", ".join(f"{m} {c.psnr[m]:.3f}" for m in methods),
                                              file=sys.stderr))
    report["clips"], report["mean"] = scored["clips"], scored["mean"]
    names = list(methods)
    report["gain_vs_window_db"] = {m: report["mean"]["psnr"][m] - report["mean"]["psnr"]["window"] for m in names}
    report["true_masks"] = true_mask_rows(paths, model, scale, max_frames, ref=v["upscaler"])
    return report


def card_table(report: dict[str, Any]) -> str:
    """The model card's table of a saved report: PSNR-Y per clip and variant, the mean, the gain
    against ``window`` and the mean tPSNR-Y, variants in alphabetical order."""
    clips = report["clips"]
    lines = ["| variant | " + " | ".join(c["clip"] for c in clips) + " | mean PSNR-Y | vs window | mean tPSNR-Y |",
             "|---|" + "---|" * (len(clips) + 3)]
    for m in sorted(report["mean"]["psnr"]):
        lines.append(f"| {m} | " + " | ".join(f"{c['psnr'][m]:.2f}" for c in clips)
                     + f" | {report['mean']['psnr'][m]:.2f} | {report['gain_vs_window_db'][m]:+.2f} | "
                     + f"{report['mean']['tpsnr'][m]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--card-table"]:  # python benchmarks/temporal_use.py --card-table REPORT.json
        if len(argv) != 2:
            raise SystemExit("usage: temporal_use.py --card-table REPORT.json")
        print(card_table(json.loads(Path(argv[1]).read_text())))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", type=Path, help="a clip or a folder of clips (e.g. the held-out set)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--model", default=None, help="model name, file or repo (default: the shipped one of --scale)")
    parser.add_argument("--max-frames", type=int, default=24, help="frames per clip (default: 24)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--motion-search", type=int, default=0,
                        help="also run the same weights with IMAGE centred on motion up to this reach (LR px)")
    parser.add_argument("--instance-motion", action="store_true",
                        help="run every variant with IMAGE's motion estimate made per instance of the masks")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = measure(find_clips(args.clips), args.model, args.scale, args.max_frames, args.motion_search,
                     args.instance_motion)
    print(f"\n{report['model']} x{report['scale']}, window {report['window']}/{report['overlap']}, "
          f"extractor {report['extractor']}: mean over {len(report['clips'])} clip(s)\n")
    print("| variant | PSNR-Y | vs window | SSIM-Y | tPSNR-Y |\n|---|---|---|---|---|")
    for m, value in report["mean"]["psnr"].items():
        t = report["mean"]["tpsnr"][m]
        print(f"| {m} | {value:.2f} | {report['gain_vs_window_db'][m]:+.2f} | {report['mean']['ssim'][m]:.4f} | "
              f"{'-' if t is None else f'{t:.2f}'} |")
    true = report["true_masks"]
    if true:
        print(f"\nclips with true masks ({', '.join(c['clip'] for c in true['clips'])}), mean PSNR-Y: "
              + ", ".join(f"{m} {v:.2f}" for m, v in true["mean_psnr"].items())
              + f"; true vs one instance {true['true_vs_one_instance_db']:+.2f} dB")
        print(f"inside the objects and {2 * report['scale']} px around them ({100 * true['objects_area']:.1f}% of the "
              "pixels), PSNR-Y: " + ", ".join(f"{m} {v:.2f}" for m, v in true["objects_psnr"].items())
              + f"; true vs one instance {true['objects_true_vs_one_instance_db']:+.2f} dB, window vs single frame "
              f"{true['objects_window_vs_single_db']:+.2f} dB")
        print(f"the object region holds {100 * true['objects_error_share']:.1f}% of the frames' squared error (one "
              f"instance): a perfect object region would add {true['objects_ceiling_db']:+.2f} dB to the whole frame "
              "(mean over the clips)")
    write_json(args.out, {"benchmark": "temporal_use", "machine": machine(), "settings": {**vars(args),
                          "clips": str(args.clips)}, **report})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
