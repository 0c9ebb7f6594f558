"""Video decoding with PyAV: ``read_video(path) -> (frames (T, H, W, 3) uint8 RGB, fps)``.

Decoding is sequential with ``thread_type = "AUTO"`` (frame + slice threads) and the decoder is
flushed at the end (the container iterator does it). The YUV -> RGB conversion is explicit
(reference f.4 #19): a wrong BT.601/709 matrix or limited/full range shifts exactly the chroma that
carries the pulse, so the source matrix and range are taken from the stream's tags when present and
otherwise chosen by the usual rule (BT.709 for height >= 720, else BT.601; limited range unless the
pixel format is a full-range ``yuvj*`` one), passed to swscale explicitly and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# AVColorSpace (libavutil/pixfmt.h) -> swscale colour matrix name understood by PyAV's reformat.
_AVCOL_SPC = {1: "itu709", 4: "fcc", 5: "itu601", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_AVCOL_RANGE = {1: "MPEG", 2: "JPEG"}


class VideoError(RuntimeError):
    """The file is missing, not a video, or has no decodable frames."""


@dataclass(frozen=True)
class ColourConversion:
    matrix: str  # swscale matrix name, e.g. itu601
    range: str  # MPEG (limited, 16-235) or JPEG (full)
    tagged: bool  # True when both came from the stream's tags

    def __str__(self) -> str:
        src = "stream tags" if self.tagged else "untagged stream: chosen by resolution / pixel format"
        return f"YUV->RGB with {self.matrix}, {'limited' if self.range == 'MPEG' else 'full'} range ({src})"


def colour_conversion(frame) -> ColourConversion:
    """The source matrix and range used to convert one decoded frame (see the module docstring)."""
    spc, rng = int(getattr(frame, "colorspace", 2) or 2), int(getattr(frame, "color_range", 0) or 0)
    matrix = _AVCOL_SPC.get(spc) or ("itu709" if frame.height >= 720 else "itu601")
    fmt = frame.format.name
    crange = _AVCOL_RANGE.get(rng) or ("JPEG" if fmt.startswith("yuvj") else "MPEG")
    return ColourConversion(matrix, crange, spc in _AVCOL_SPC and rng in _AVCOL_RANGE)


def iter_video(path: str | Path) -> tuple[float, Iterator[np.ndarray]]:
    """``(fps, frames)``: the frame rate and a generator of RGB frames (H, W, 3) uint8, decoded one at a
    time (memory stays one frame). Errors as :func:`read_video`; a generator that yields nothing raises
    :class:`VideoError` when exhausted."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream (streams: {[s.type for s in container.streams]})")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(Fraction(rate)) if rate else 0.0
    except VideoError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from exc
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise VideoError(f"{path}: the video stream has no frame rate")

    def frames() -> Iterator[np.ndarray]:
        n = 0
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                conv = None
                for frame in container.decode(stream):  # flushes the decoder at the end
                    if conv is None:
                        conv = colour_conversion(frame)
                        log.info("%s: %s", path.name, conv)
                    rgb = frame.reformat(
                        format="rgb24",
                        src_colorspace=conv.matrix,
                        src_color_range=conv.range,
                        dst_color_range="JPEG",
                    )
                    n += 1
                    yield rgb.to_ndarray()
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise VideoError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from exc
        if n == 0:
            raise VideoError(f"{path}: the video stream has no decodable frames")

    return fps, frames()


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame of ``path`` to RGB: ``(frames (T, H, W, 3) uint8, fps)``.

    Raises :class:`VideoError` naming the file if it does not exist, is not a media file, has no
    video stream or yields no frames. ``max_frames`` stops early (for previews and tests). The whole
    video is held in memory (H x W x 3 bytes per frame); :func:`iter_video` streams instead.
    """
    fps, it = iter_video(path)
    frames: list[np.ndarray] = []
    for frame in it:
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            it.close()
            break
    return np.stack(frames), fps


def write_video(path: str | Path, frames, fps: float = 30.0, crf: int = 18) -> None:
    """Write RGB frames as H.264 (yuv420p, tagged BT.601 limited range).

    ``frames``: a (T, H, W, 3) uint8 array, or any iterable of (H, W, 3) uint8 frames (streamed, so
    a long video never has to sit in memory).
    """
    import itertools

    import av

    if isinstance(frames, np.ndarray):
        frames = np.asarray(frames, dtype=np.uint8)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    frames = itertools.chain([first], frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        stream.codec_context.colorspace = 5  # BT.470BG = BT.601
        stream.codec_context.color_range = 1  # limited
        for img in frames:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="itu601", dst_color_range="MPEG")
            frame.colorspace, frame.color_range = 5, 1
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def synthetic_face_frames(
    seconds: float = 12.0,
    fps: float = 30.0,
    bpm: float = 72.0,
    size: tuple[int, int] = (480, 640),
    face_px: int = 220,
    seed: int = 0,
) -> np.ndarray:
    """(T, H, W, 3) uint8 test frames: skimage's astronaut head on a plain background, drifting slowly,
    with a blood-volume pulse at ``bpm`` on the face (0.8 % green contrast) and sensor noise.

    For tests and benchmarks of ``rpm predict``; not a physiological model (see ``rpm synth`` for that).
    """
    from PIL import Image
    from skimage.data import astronaut

    h, w = size
    head = np.asarray(Image.fromarray(astronaut()[0:300, 76:376]).resize((face_px, face_px), Image.BILINEAR))
    head = head.astype(np.float32)
    n = int(round(seconds * fps))
    t = np.arange(n) / fps
    pulse = np.sin(2 * np.pi * bpm / 60.0 * t)
    contrast = 0.008 * np.array([0.3, 1.0, 0.5], dtype=np.float32)
    rng = np.random.default_rng(seed)
    bg = np.empty((h, w, 3), np.float32)
    bg[:] = (96.0, 110.0, 120.0)
    frames = np.empty((n, h, w, 3), np.uint8)
    y0 = (h - face_px) // 2
    for i in range(n):
        x0 = (w - face_px) // 2 + int(round(15 * np.sin(2 * np.pi * 0.05 * t[i])))
        img = bg.copy()
        img[y0 : y0 + face_px, x0 : x0 + face_px] = head * (1.0 - contrast * pulse[i])
        img += 1.5 * rng.standard_normal(img.shape).astype(np.float32)
        frames[i] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return frames
