"""Makes ``examples/sample.mp4``: a short, procedurally drawn clip with an audio track.

Everything in it is generated here (no third-party footage): a textured landscape seen by a
panning camera, two objects moving on their own paths, and a two-note melody. Run:

    python examples/make_sample.py [OUTPUT]
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS, FRAMES = 320, 180, 24, 48
SAMPLE_RATE = 48000


def landscape(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A wide (height, width, 3) float image: sky gradient, hills with texture, a brick wall."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    img[...] = np.stack([0.45 + 0.3 * y / height, 0.6 + 0.25 * y / height, 0.95 - 0.1 * y / height], -1)
    ridge = height * (0.55 + 0.08 * np.sin(x / 37.0) + 0.04 * np.sin(x / 11.0 + 1.3))
    hills = y > ridge
    grass = 0.5 + 0.5 * np.sin(x * 1.7 + y * 0.9) * np.sin(y * 2.3 - x * 0.4)
    noise = rng.normal(0, 0.06, (height, width))
    img[hills] = (np.stack([0.2 + 0.15 * grass, 0.45 + 0.2 * grass, 0.15 + 0.05 * grass], -1) + noise[..., None])[hills]
    # A brick wall in the lower-left part of the scene.
    wall = (y > height * 0.72) & (x % 400 < 170)
    row = (y // 6).astype(int)
    mortar = ((y % 6) < 1) | (((x + (row % 2) * 6) % 12) < 1)
    brick = np.stack([0.62, 0.28, 0.2]) + rng.normal(0, 0.04, 3)
    img[wall] = np.where(mortar[wall][:, None], 0.85, brick[None, :] + noise[wall][:, None])
    # Stripes of "text" on a sign.
    sign = (y > height * 0.3) & (y < height * 0.45) & (x % 520 > 300) & (x % 520 < 380)
    img[sign] = np.where(((y[sign] // 3) % 2 == 0)[:, None] & ((x[sign] % 7) < 5)[:, None], 0.1, 0.95)
    return np.clip(img, 0, 1)


def draw_frame(scene: np.ndarray, k: int) -> np.ndarray:
    h, w = HEIGHT, WIDTH
    x0 = int(2.5 * k)
    frame = scene[:h, x0:x0 + w].copy()
    y, x = np.mgrid[0:h, 0:w]
    # A ball bouncing across (moves differently from the camera).
    cx, cy = 40 + 5.0 * k, 60 + 30 * abs(np.sin(k / 6.0))
    ball = (x - cx) ** 2 + (y - cy) ** 2 < 15**2
    shade = 0.6 + 0.4 * np.cos((x - cx) / 6.0) * np.cos((y - cy) / 6.0)
    frame[ball] = np.stack([0.9 * shade, 0.3 * shade, 0.25 * shade], -1)[ball]
    # A striped box sliding the other way.
    bx, by = 260 - 3.0 * k, 120
    box = (x > bx) & (x < bx + 36) & (y > by) & (y < by + 24)
    frame[box] = np.where((((x + y) // 4) % 2 == 0)[..., None], [0.95, 0.85, 0.2], [0.1, 0.1, 0.4])[box]
    return (frame * 255).round().astype(np.uint8)


def melody(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    freq = np.where((t * 2).astype(int) % 2 == 0, 440.0, 554.37)
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def main(out: Path) -> None:
    rng = np.random.default_rng(2024)
    scene = landscape(WIDTH + 3 * FRAMES, HEIGHT, rng)
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"crf": "20", "preset": "slow"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for k in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(draw_frame(scene, k), format="rgb24")
            frame.pts = k
            frame.time_base = Fraction(1, FPS)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = melody(FRAMES / FPS)
        for i in range(0, len(samples), 1024):
            chunk = samples[i:i + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            af.sample_rate = SAMPLE_RATE
            af.pts = i
            af.time_base = Fraction(1, SAMPLE_RATE)
            for packet in audio.encode(af):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sample.mp4"))
