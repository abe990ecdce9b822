"""Degradations that turn high-resolution frames into the low-resolution inputs of training and evaluation.

A degradation is a chain applied to a whole clip, so that it is temporally coherent like real
footage: the standard bicubic ("BI") downscale first, then optionally blur, noise and real video
compression through PyAV (libx264 / libx265, yuv420p), or JPEG for stills. Written as text for
``semlens eval --degradation`` and ``semlens train --degradation``::

    bi                                  clean bicubic downscale (the default)
    x264:crf=23                         BI, then H.264 at CRF 23 (preset medium)
    blur:sigma=0.8+noise:sigma=2+x265:crf=30,preset=fast
    jpeg:quality=60

``random`` is the training mix (:class:`RandomDegradation`): every clip gets random strengths drawn
from a generator, so a batch is a pure function of ``(seed, iteration)``. Its probabilities and
ranges can be set, e.g. a milder mix that keeps more clips clean and compresses less hard::

    random:compress=0.5,crf=18-30,blur=0.2,noise=0.3
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bicubic_degrade", "bicubic_upscale", "quantize", "gaussian_blur", "add_noise", "compress_clip", "jpeg_clip",
    "Step", "Degradation", "RandomDegradation", "parse_degradation", "parse_random",
]

CODECS = {"x264": "libx264", "x265": "libx265"}
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
# libx265 corrupts memory on frames smaller than one 64-pixel coding tree unit: clips are padded up to it.
_X265_MIN_SIDE = 64


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid (what an 8-bit video stores)."""
    return (x.clamp(0, 1) * 255).round() / 255


def bicubic_degrade(hr: Tensor, scale: int) -> Tensor:
    """The standard "BI" degradation.

    ``hr`` ``(..., 3, H, W)`` float RGB in [0, 1] with ``H`` and ``W`` divisible by ``scale`` gives
    ``(..., 3, H / scale, W / scale)``: antialiased bicubic downscaling, clamped and rounded to 8 bits.
    """
    lead = hr.shape[:-3]
    flat = hr.reshape(-1, *hr.shape[-3:]).float()
    lr = F.interpolate(flat, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return quantize(lr).reshape(*lead, *lr.shape[-3:])


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """Plain bicubic upscaling ``(..., 3, h, w)`` -> ``(..., 3, s*h, s*w)`` (the usual baseline)."""
    lead = lr.shape[:-3]
    flat = lr.reshape(-1, *lr.shape[-3:]).float()
    up = F.interpolate(flat, scale_factor=scale, mode="bicubic", align_corners=False)
    return up.clamp(0, 1).reshape(*lead, *up.shape[-3:])


def gaussian_blur(clip: Tensor, sigma: float) -> Tensor:
    """``(T, 3, h, w)`` blurred by an isotropic Gaussian of ``sigma`` pixels (reflect padding), 8-bit."""
    if sigma <= 0:
        return clip
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma * sigma))
    k = (k / k.sum()).to(clip)
    flat = clip.reshape(-1, 1, *clip.shape[-2:])
    pad_h, pad_w = min(radius, clip.shape[-2] - 1), min(radius, clip.shape[-1] - 1)
    flat = F.pad(flat, (pad_w, pad_w, pad_h, pad_h), mode="reflect" if min(pad_h, pad_w) > 0 else "replicate")
    kh, kw = k[radius - pad_h:radius + pad_h + 1], k[radius - pad_w:radius + pad_w + 1]
    flat = F.conv2d(flat, (kw / kw.sum()).view(1, 1, 1, -1))
    flat = F.conv2d(flat, (kh / kh.sum()).view(1, 1, -1, 1))
    return quantize(flat.reshape(clip.shape))


def add_noise(clip: Tensor, sigma: float, poisson: float, generator: torch.Generator) -> Tensor:
    """Sensor-like noise on ``(T, 3, h, w)``: Gaussian of ``sigma`` 8-bit levels plus a signal-dependent
    (Poisson-like) part of ``poisson`` levels at full brightness; new noise every frame, 8-bit."""
    if sigma <= 0 and poisson <= 0:
        return clip
    std = sigma / 255 + poisson / 255 * clip.clamp_min(0).sqrt()
    noise = torch.randn(clip.shape, generator=generator, dtype=torch.float32).to(clip)
    return quantize(clip + noise * std)


def _to_uint8(clip: Tensor) -> np.ndarray:
    return (clip.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def compress_clip(clip: Tensor, codec: str = "libx264", crf: int = 23, preset: str = "medium") -> tuple[Tensor, int]:
    """Encode ``(T, 3, h, w)`` float RGB as one video (yuv420p, ``codec`` at ``crf``), decode it back.

    Returns the decoded clip (same shape, 8-bit values) and the encoded size in bytes. The encoder
    runs single-threaded with the output writer's settings (:func:`semlens.io.encoding.codec_options`),
    so the result is a pure function of its inputs. Sides are padded (edge replicate) to even
    sizes, and for libx265 to at least 64 pixels, then cropped back.
    """
    import av

    from semlens.io.encoding import codec_options, merge_options

    t, _, h, w = clip.shape
    pad_h, pad_w = h % 2, w % 2
    if codec == "libx265":
        pad_h, pad_w = max(pad_h, _X265_MIN_SIDE - h), max(pad_w, _X265_MIN_SIDE - w)
    frames = _to_uint8(F.pad(clip, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else clip)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        # The writer's settings (for libx264 its CPU-independent macroblock tree: the SIMD ones
        # gave a different round trip from run to run), on one thread.
        single = {"x265-params": "pools=1:frame-threads=1"} if codec == "libx265" else {"threads": "1"}
        stream.options = merge_options(codec_options(codec, int(crf), preset), single)
        stream.codec_context.thread_count = 1
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    size = buffer.tell()
    buffer.seek(0)
    with av.open(buffer) as src:
        decoded = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    if len(decoded) != t:
        raise RuntimeError(f"{codec} round trip gave {len(decoded)} frames for {t}")
    back = torch.from_numpy(np.stack(decoded)[:, :h, :w]).permute(0, 3, 1, 2).float().div(255)
    return back.to(clip), size


def jpeg_clip(clip: Tensor, quality: int) -> Tensor:
    """Every frame of ``(T, 3, h, w)`` through JPEG at ``quality`` (4:2:0), decoded back."""
    from PIL import Image

    out = []
    for image in _to_uint8(clip):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255).to(clip)


@dataclass(frozen=True)
class Step:
    """One stage after the BI downscale: ``kind`` is ``blur``, ``noise``, ``x264``, ``x265`` or ``jpeg``."""

    kind: str
    params: dict[str, float | str] = field(default_factory=dict)

    def apply(self, clip: Tensor, generator: torch.Generator) -> Tensor:
        p = self.params
        if self.kind == "blur":
            return gaussian_blur(clip, float(p.get("sigma", 1.0)))
        if self.kind == "noise":
            return add_noise(clip, float(p.get("sigma", 2.0)), float(p.get("poisson", 0.0)), generator)
        if self.kind in CODECS:
            return compress_clip(clip, CODECS[self.kind], int(p.get("crf", 23)), str(p.get("preset", "medium")))[0]
        if self.kind == "jpeg":
            return jpeg_clip(clip, int(p.get("quality", 75)))
        raise ValueError(f"unknown degradation step {self.kind!r}")

    def text(self) -> str:
        return self.kind + (":" + ",".join(f"{k}={v}" for k, v in self.params.items()) if self.params else "")


_ALLOWED = {"bi": set(), "blur": {"sigma"}, "noise": {"sigma", "poisson"}, "x264": {"crf", "preset"},
            "x265": {"crf", "preset"}, "jpeg": {"quality"}}


def _check(kind: str, params: dict[str, float | str]) -> None:
    unknown = set(params) - _ALLOWED[kind]
    if unknown:
        raise ValueError(f"{kind} takes {', '.join(sorted(_ALLOWED[kind])) or 'no options'}, not {', '.join(sorted(unknown))}")
    if "crf" in params and not 0 <= float(params["crf"]) <= 51:
        raise ValueError(f"crf must be within 0-51, got {params['crf']}")
    if "preset" in params and params["preset"] not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {params['preset']}")
    if "quality" in params and not 1 <= float(params["quality"]) <= 100:
        raise ValueError(f"JPEG quality must be within 1-100, got {params['quality']}")
    for key in ("sigma", "poisson"):
        if key in params and not 0 <= float(params[key]) <= 50:
            raise ValueError(f"{kind} {key} must be within 0-50, got {params[key]}")


@dataclass(frozen=True)
class Degradation:
    """BI downscale by the scale, then ``steps`` in order, on whole clips."""

    steps: tuple[Step, ...] = ()

    @property
    def is_bi(self) -> bool:
        return not self.steps

    def text(self) -> str:
        return "+".join(s.text() for s in self.steps) if self.steps else "bi"

    def __call__(self, hr: Tensor, scale: int, generator: torch.Generator | None = None) -> Tensor:
        """``hr`` ``(T, 3, H, W)`` float RGB in [0, 1] (sides divisible by ``scale``) -> LR ``(T, 3, H/s, W/s)``."""
        return self.degrade_lr(bicubic_degrade(hr, scale), generator)

    def degrade_lr(self, lr: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The steps after the downscale, on an already downscaled ``(T, 3, h, w)`` clip."""
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        for step in self.steps:
            lr = step.apply(lr, g)
        return lr


def parse_degradation(text: str) -> Degradation:
    """``"bi"``, ``"x264:crf=23"``, ``"blur:sigma=0.8+noise:sigma=2+x265:crf=30,preset=fast"``, ... (see the
    module docstring). Raises ``ValueError`` with what is wrong."""
    steps = []
    for part in (p.strip() for p in text.strip().lower().split("+")):
        kind, _, options = part.partition(":")
        if kind not in _ALLOWED:
            raise ValueError(f"unknown degradation {kind!r} in {text!r}; use bi, blur, noise, x264, x265 or jpeg")
        params: dict[str, float | str] = {}
        for item in filter(None, (o.strip() for o in options.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"{item!r} in {text!r} should be KEY=VALUE")
            try:
                params[key] = value if key == "preset" else float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} in {text!r} is not a number") from None
        _check(kind, params)
        if kind != "bi":
            steps.append(Step(kind, params))
    return Degradation(tuple(steps))


@dataclass(frozen=True)
class RandomDegradation:
    """The training mix for real footage: per clip, with the given probabilities, a mild blur,
    noise, and a compression at a random CRF and preset (H.264 or H.265); the rest stays clean BI.
    Every draw comes from the generator given, so batches stay a pure function of the seed."""

    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise_p: float = 0.4
    noise_sigma: tuple[float, float] = (0.5, 4.0)
    poisson_p: float = 0.5
    compress_p: float = 0.8
    crf: tuple[int, int] = (18, 35)
    x265_p: float = 0.3
    presets: Sequence[str] = ("veryfast", "faster", "fast", "medium")

    def draw(self, generator: torch.Generator) -> Degradation:
        """One clip's :class:`Degradation`."""
        def u() -> float:
            return float(torch.rand((), generator=generator))

        def between(lo: float, hi: float) -> float:
            return lo + (hi - lo) * u()

        steps = []
        if u() < self.blur_p:
            steps.append(Step("blur", {"sigma": round(between(*self.blur_sigma), 3)}))
        if u() < self.noise_p:
            sigma = round(between(*self.noise_sigma), 3)
            poisson = round(between(*self.noise_sigma), 3) if u() < self.poisson_p else 0.0
            steps.append(Step("noise", {"sigma": sigma, "poisson": poisson}))
        if u() < self.compress_p:
            kind = "x265" if u() < self.x265_p else "x264"
            crf = int(torch.randint(self.crf[0], self.crf[1] + 1, (), generator=generator))
            preset = self.presets[int(torch.randint(len(self.presets), (), generator=generator))]
            steps.append(Step(kind, {"crf": crf, "preset": preset}))
        return Degradation(tuple(steps))


# ``random:KEY=VALUE,...`` keys: probabilities and the ranges they draw from.
_RANDOM_PROBABILITIES = {"blur": "blur_p", "noise": "noise_p", "poisson": "poisson_p",
                         "compress": "compress_p", "x265": "x265_p"}
_RANDOM_RANGES = {"crf": "crf", "blur-sigma": "blur_sigma", "noise-sigma": "noise_sigma"}


def parse_random(text: str) -> RandomDegradation:
    """``"random"`` or ``"random:compress=0.5,crf=18-30,blur=0.2"`` -> :class:`RandomDegradation`.

    Probabilities (0..1): ``blur``, ``noise``, ``poisson``, ``compress``, ``x265``; ranges ``LO-HI``:
    ``crf`` (integers 0..51), ``blur-sigma``, ``noise-sigma``. Raises ``ValueError`` with what is wrong."""
    kind, _, options = text.strip().lower().partition(":")
    if kind != "random":
        raise ValueError(f"{text!r} is not a random mix (random or random:KEY=VALUE,...)")
    values: dict[str, object] = {}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{item!r} in {text!r} should be KEY=VALUE")
        if key in _RANDOM_PROBABILITIES:
            try:
                p = float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} in {text!r} is not a number") from None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{key}={value} in {text!r} is a probability: use 0..1")
            values[_RANDOM_PROBABILITIES[key]] = p
        elif key in _RANDOM_RANGES:
            lo_text, dash, hi_text = value.partition("-")
            try:
                lo, hi = float(lo_text), float(hi_text if dash else lo_text)
            except ValueError:
                raise ValueError(f"{key}={value!r} in {text!r} should be LO-HI") from None
            if not 0 <= lo <= hi:
                raise ValueError(f"{key}={value!r} in {text!r} should be LO-HI with 0 <= LO <= HI")
            if key == "crf":
                if lo != int(lo) or hi != int(hi) or hi > 51:
                    raise ValueError(f"crf={value!r} in {text!r} should be whole numbers within 0..51")
                values["crf"] = (int(lo), int(hi))
            else:
                values[_RANDOM_RANGES[key]] = (lo, hi)
        else:
            known = ", ".join([*_RANDOM_PROBABILITIES, *_RANDOM_RANGES])
            raise ValueError(f"unknown option {key!r} in {text!r}; use {known}")
    return RandomDegradation(**values)  # type: ignore[arg-type]
