"""Which encoder and which pixel format a video is written with, and the encoder's settings.

Codec names: friendly names (``h264``, ``hevc``, ``av1``, ``vp9``) map to the bundled encoders
(:data:`CODEC_ALIASES`, :func:`resolve_codec`). A container that cannot hold the codec asked for
gets a hint naming bundled encoders it does hold (:func:`container_hint`).

Pixel formats (``pix_fmt=None`` picks automatically, see :func:`choose_pix_fmt`):

- 8-bit source: ``yuv420p`` (``yuv444p`` for the lossless ``ffv1``).
- Source with more than 8 bits per sample: written 10-bit (``yuv420p10le`` with libx264 / libx265 /
  libsvtav1, ``yuv444p10le``/``12le``/``16le`` with ffv1); a codec without a high-bit-depth format
  falls back to 8-bit with a warning.
- Odd width or height: 4:2:0 chroma needs even sizes, so the automatic choice switches to the 4:4:4
  format of the same depth (``yuv444p``; libx264/libx265 encode it, the displayed size stays exact)
  with a warning. An explicit subsampled ``pix_fmt`` at an odd size, or a codec without 4:4:4
  (libsvtav1), raises :class:`~semlens.errors.OutputError`. (The upscaler multiplies sizes by 2 or
  4, so its outputs are always even.)

Encoder settings (:func:`codec_options`): crf and preset for each encoder's own scale; libx264
runs with ``cpu-independent=1``, so that the same frames and settings give the same file, byte for
byte (its SIMD macroblock-tree code is not bit-exact with its C code, and the AVX-512 version read
memory it never wrote, which gave a different file on every run); its output still depends on its
thread count, which follows the number of CPUs.
"""

from __future__ import annotations

import io
import warnings

import av

from ..errors import OutputError
from ._av import AV_ERRORS, bit_depth_of

__all__ = [
    "CODEC_ALIASES",
    "DEFAULT_CODEC",
    "DEFAULT_CRF",
    "DEFAULT_PRESET",
    "OutputWarning",
    "check_encoder_settings",
    "choose_pix_fmt",
    "codec_options",
    "container_hint",
    "encoder_pix_fmts",
    "merge_options",
    "resolve_codec",
]

DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"

CODEC_ALIASES: dict[str, str] = {
    "h264": "libx264",
    "x264": "libx264",
    "avc": "libx264",
    "h265": "libx265",
    "hevc": "libx265",
    "x265": "libx265",
    "av1": "libsvtav1",
    "svtav1": "libsvtav1",
    "svt-av1": "libsvtav1",
    "vp9": "libvpx-vp9",
}

# x264-style preset names translated to SVT-AV1's numeric presets (0 slowest .. 13 fastest).
_SVT_PRESETS = {
    "placebo": "0",
    "veryslow": "2",
    "slower": "4",
    "slow": "5",
    "medium": "7",
    "fast": "8",
    "faster": "9",
    "veryfast": "10",
    "superfast": "11",
    "ultrafast": "12",
}

# Encoders suggested, in this order, when a container cannot hold the one asked for.
_SUGGESTED_CODECS = ("libx264", "libvpx-vp9", "libsvtav1", "libx265", "ffv1", "gif")


class OutputWarning(UserWarning):
    """The output differs from what was asked in a documented way (a stream skipped, 8-bit fallback...)."""


def resolve_codec(codec: str) -> str:
    """Map friendly names (``h264``, ``hevc``, ``av1``, ...) to the bundled encoder's name and check it
    exists; raises :class:`OutputError` for unknown or non-video encoders."""
    name = CODEC_ALIASES.get(codec.lower(), codec) if codec else DEFAULT_CODEC
    try:
        c = av.Codec(name, "w")
    except AV_ERRORS as exc:
        raise OutputError(
            f"unknown video encoder {codec!r}; use one of libx264, libx265, libsvtav1, ffv1, libvpx-vp9"
        ) from exc
    if c.type != "video":
        raise OutputError(f"{codec!r} is a {c.type} encoder, not a video encoder; use e.g. libx264")
    return c.name


def encoder_pix_fmts(codec: str) -> list[str] | None:
    """Pixel formats the bundled ``codec`` encoder accepts (``None`` if it does not say)."""
    c = av.Codec(resolve_codec(codec), "w")
    formats = c.video_formats
    return [f.name for f in formats] if formats else None


def _subsampled(pix_fmt: str) -> tuple[bool, bool]:
    fmt = av.VideoFormat(pix_fmt)
    if fmt.is_rgb or len(fmt.components) < 3:
        return (False, False)
    return (fmt.chroma_width(2) < 2, fmt.chroma_height(2) < 2)


def _to_444(pix_fmt: str) -> str:
    for sub in ("420p", "422p", "440p", "411p", "410p"):
        if sub in pix_fmt:
            return pix_fmt.replace(sub, "444p")
    return pix_fmt


def choose_pix_fmt(
    codec: str,
    *,
    bit_depth: int = 8,
    width: int,
    height: int,
    requested: str | None = None,
    warn: bool = True,
) -> str:
    """The pixel format to encode with (see the module docstring for the rules).

    ``bit_depth`` is the source's bits per sample (8 for uint8 frames). Raises
    :class:`OutputError` when the request cannot be met.
    """
    codec = resolve_codec(codec)
    supported = encoder_pix_fmts(codec)

    def ok(fmt: str) -> bool:
        return supported is None or fmt in supported

    def odd_ok(fmt: str) -> bool:
        sub_w, sub_h = _subsampled(fmt)
        return not ((sub_w and width % 2) or (sub_h and height % 2))

    if requested is not None:
        try:
            av.VideoFormat(requested)
        except AV_ERRORS as exc:
            raise OutputError(f"unknown pixel format {requested!r}; use e.g. yuv420p or yuv420p10le") from exc
        if not ok(requested):
            raise OutputError(
                f"{codec} cannot encode pixel format {requested!r}; it supports: {', '.join(supported or [])}"
            )
        if not odd_ok(requested):
            alt = _to_444(requested)
            hint = f" or pix_fmt={alt!r}" if ok(alt) else ""
            raise OutputError(
                f"{codec} with {requested} needs an even width and height, got {width}x{height}; use an even size{hint}"
            )
        return requested

    lossless = codec == "ffv1"
    family = "444p" if lossless else "420p"
    candidates: list[str] = []
    if bit_depth > 8:
        depths = [d for d in (bit_depth, 10, 12, 16) if d in (10, 12, 16)]
        for d in dict.fromkeys(depths):
            candidates.append(f"yuv{family}{d}le")
        if not lossless:
            candidates.append("yuv444p10le")
    candidates.append(f"yuv{family}")
    if supported is not None:
        candidates.extend(supported)

    chosen = next((f for f in candidates if ok(f)), None)
    if chosen is None:
        raise OutputError(f"{codec} offers no usable pixel format")
    if not odd_ok(chosen):
        alt = _to_444(chosen)
        if ok(alt) and odd_ok(alt):
            if warn:
                warnings.warn(
                    OutputWarning(
                        f"{width}x{height} is odd-sized: encoding {alt} instead of {chosen} (4:2:0 needs even sizes)"
                    ),
                    stacklevel=3,
                )
            chosen = alt
        else:
            raise OutputError(
                f"{codec} cannot encode an odd size ({width}x{height}); use an even size or codec libx264 / ffv1"
            )
    if bit_depth > 8 and bit_depth_of(chosen) <= 8 and warn:
        warnings.warn(
            OutputWarning(
                f"{codec} has no high-bit-depth format here; writing 8-bit (use libx265, libx264 or ffv1 to keep {bit_depth}-bit)"
            ),
            stacklevel=3,
        )
    return chosen


#: x264 / x265 preset names, fastest first.
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
# The crf range each encoder takes (others ignore crf).
_CRF_RANGES = {"libx264": (0, 51), "libx265": (0, 51), "libsvtav1": (0, 63), "libvpx-vp9": (0, 63)}


def check_encoder_settings(codec: str, crf: int | float | None, preset: str | None) -> None:
    """Raise ValueError (one line) for a ``crf`` or ``preset`` that the encoder ``codec`` (a name
    :func:`resolve_codec` gives) does not take, before any frame is made; settings an encoder
    ignores pass."""
    low, high = _CRF_RANGES.get(codec, (None, None))
    if crf is not None and low is not None and not low <= crf <= high:
        raise ValueError(f"crf {crf:g} is outside {codec}'s range {low}-{high}")
    if not preset:
        return
    if codec in ("libx264", "libx265") and preset not in X26X_PRESETS:
        raise ValueError(f"{codec} has no preset {preset!r}; use one of {', '.join(X26X_PRESETS)}")
    if codec == "libsvtav1" and preset not in _SVT_PRESETS and not (preset.isdigit() and 0 <= int(preset) <= 13):
        raise ValueError(f"libsvtav1 has no preset {preset!r}; use an x264 name ({', '.join(_SVT_PRESETS)}) or 0-13")


def codec_options(codec: str, crf: int | float | None, preset: str | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    if codec in ("libx264", "libx265"):
        if crf is not None:
            opts["crf"] = str(crf)
        if preset:
            opts["preset"] = str(preset)
        if codec == "libx264":
            # x264's SIMD versions of the macroblock-tree cost propagation are not bit-exact with
            # one another, and the AVX-512 ones read memory they never wrote, so the same frames
            # gave different files from run to run. The canonical versions make the output
            # depend only on the frames and the settings (and x264's thread count).
            opts["x264-params"] = "cpu-independent=1"
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
    elif codec == "libsvtav1":
        if crf is not None:
            opts["crf"] = str(int(crf))
        if preset:
            opts["preset"] = _SVT_PRESETS.get(str(preset), str(preset))
    elif codec == "libvpx-vp9":
        if crf is not None:
            opts["crf"] = str(int(crf))
            opts["b"] = "0"
    return opts


def merge_options(opts: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
    """``opts`` updated with the caller's ``extra``; encoder parameter lists (``x264-params``,
    ``x265-params``) are joined, the caller's entries last so that they win."""
    merged = dict(opts)
    for key, value in (extra or {}).items():
        value = str(value)
        if key.endswith("-params") and merged.get(key):
            merged[key] = f"{merged[key]}:{value}"
        else:
            merged[key] = value
    return merged


def container_hint(format_name: str, codec: str) -> str:
    """What to do when the ``format_name`` container refuses ``codec``: the bundled encoders it
    does hold, else .mkv."""
    fits = []
    for candidate in _SUGGESTED_CODECS:
        if candidate == codec:
            continue
        try:
            av.Codec(candidate, "w")
            with av.open(io.BytesIO(), mode="w", format=format_name) as probe:
                probe.add_stream(candidate)
        except AV_ERRORS:
            continue
        fits.append(candidate)
    if not fits:
        return "write .mkv instead (it holds every codec)"
    alternatives = " or ".join(f"codec {c} (--codec {c})" for c in fits[:2])
    return f"use {alternatives}, or write .mkv (it holds every codec)"
