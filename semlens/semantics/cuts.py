"""Scene-cut detection on the decoded stream.

A cut is declared where the colour histograms of consecutive frames differ by more than ``high``
(half the L1 distance of normalised 512-bin RGB histograms, in [0, 1]); after a cut the detector
only re-arms once the distance has dropped below ``low`` (hysteresis), so a flash or a whip pan
yields one cut, not a burst of them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SceneCutDetector", "histogram_distance", "colour_histogram"]


def colour_histogram(frame: np.ndarray, samples: int = 64) -> np.ndarray:
    """Normalised 8x8x8 RGB histogram of an ``(H, W, 3)`` uint8/uint16 frame (subsampled grid)."""
    h, w = frame.shape[:2]
    sub = frame[:: max(1, h // samples), :: max(1, w // samples)]
    shift = 5 if sub.dtype == np.uint8 else 13
    q = (sub >> shift).astype(np.int64)
    index = (q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).ravel()
    hist = np.bincount(index, minlength=512).astype(np.float64)
    return hist / max(1.0, hist.sum())


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance between two normalised histograms (0 = same, 1 = disjoint)."""
    return float(0.5 * np.abs(a - b).sum())


class SceneCutDetector:
    """Streaming cut detector: ``update(frame)`` is True when ``frame`` starts a new shot.

    Args:
        high: distance above which a cut is declared.
        low: distance below which the detector re-arms after a cut.
    """

    def __init__(self, high: float = 0.5, low: float = 0.25) -> None:
        if not 0 <= low <= high <= 1:
            raise ValueError("need 0 <= low <= high <= 1")
        self.high, self.low = high, low
        self.reset()

    def reset(self) -> None:
        self._previous: np.ndarray | None = None
        self._armed = True

    def update(self, frame: np.ndarray) -> bool:
        hist = colour_histogram(frame)
        previous, self._previous = self._previous, hist
        if previous is None:
            return False
        distance = histogram_distance(previous, hist)
        if self._armed and distance > self.high:
            self._armed = False
            return True
        if distance < self.low:
            self._armed = True
        return False
