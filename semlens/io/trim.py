"""Moving and dropping copied audio/subtitle packets for an output that covers part of its source.

``start`` is in seconds of the source, ``end`` in seconds of the output; a packet's own
timestamps are in ``packet.time_base``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

__all__ = ["place_packet"]


def place_packet(packet: Any, start: Fraction, end: Fraction | None = None) -> bool:
    """Move ``packet`` ``start`` seconds earlier, in place; ``False`` when it is to be dropped.

    A packet that starts before ``start``, or at or after ``end`` (after the move), is dropped,
    except a subtitle cue still showing at ``start``: it is kept from there, with the rest of its
    duration. A subtitle cue still showing at ``end`` is cut there. Packets without a time base
    are kept as they are.
    """
    if not packet.time_base:
        return True
    tb = Fraction(packet.time_base)
    ts = packet.pts if packet.pts is not None else packet.dts
    subtitle = packet.stream.type == "subtitle"
    if start > 0:
        ticks = round(start / tb)
        if ts is not None and ts < ticks:
            stop = ts + (packet.duration or 0)
            if not subtitle or stop <= ticks:
                return False
            packet.duration = stop - ticks
            packet.pts = packet.dts = ts = ticks
        if packet.pts is not None:
            packet.pts -= ticks
        if packet.dts is not None:
            packet.dts -= ticks
        ts = None if ts is None else ts - ticks
    if end is not None and ts is not None:
        last = round(end / tb)
        if ts >= last:
            return False
        if subtitle and packet.duration and ts + packet.duration > last:
            packet.duration = last - ts
    return True
