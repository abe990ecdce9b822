"""Streaming video I/O with PyAV: readers, writers, image sequences, atomic output.

Typical use (frames are ``(H, W, 3)`` RGB, uint8 for 8-bit sources, uint16 for deeper ones)::

    with open_source(src) as reader:                       # VideoReader or ImageSequenceReader
        with atomic_output(dst, overwrite=False, source=src) as tmp:
            with VideoWriter(tmp, source=reader.info, source_path=src, width=2 * reader.info.width,
                             height=2 * reader.info.height) as writer:
                for frame in reader:
                    writer.write(upscale(frame.image), frame.pts)
"""

from .atomic import (
    PARTIAL_MARKER,
    atomic_output,
    check_output_path,
    find_partials,
    partial_path,
    remove_stale_partials,
)
from .complete import is_complete_output
from .images import (
    DEFAULT_FPS,
    IMAGE_EXTENSIONS,
    ImageSequenceReader,
    ImageSequenceWriter,
    is_image_folder,
    list_images,
    natural_sort_key,
    read_image,
    write_png,
)
from .info import VideoInfo, probe
from .reader import Frame, FrameSource, TruncatedInputWarning, VideoReader
from .sources import VIDEO_EXTENSIONS, is_video_file, open_source
from .writer import (
    CODEC_ALIASES,
    DEFAULT_CODEC,
    OutputWarning,
    PlanarImage,
    PlanarLayout,
    VideoWriter,
    choose_pix_fmt,
    encoder_pix_fmts,
    resolve_codec,
)

__all__ = [
    "CODEC_ALIASES",
    "DEFAULT_CODEC",
    "DEFAULT_FPS",
    "IMAGE_EXTENSIONS",
    "PARTIAL_MARKER",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameSource",
    "ImageSequenceReader",
    "ImageSequenceWriter",
    "OutputWarning",
    "PlanarImage",
    "PlanarLayout",
    "TruncatedInputWarning",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "atomic_output",
    "check_output_path",
    "choose_pix_fmt",
    "encoder_pix_fmts",
    "find_partials",
    "is_complete_output",
    "is_image_folder",
    "is_video_file",
    "list_images",
    "natural_sort_key",
    "open_source",
    "partial_path",
    "probe",
    "read_image",
    "remove_stale_partials",
    "resolve_codec",
    "write_png",
]
