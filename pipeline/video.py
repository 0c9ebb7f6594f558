"""Video decoding with PyAV: ``read_video(path) -> (frames (T, H, W, 3) uint8 RGB, fps)``.

Decoding is sequential with ``thread_type = "AUTO"`` (frame + slice threads) and the decoder is
flushed at the end (the container iterator does it). The YUV -> RGB conversion is explicit
because a wrong BT.601/709 matrix or limited/full range shifts exactly the chroma that
carries the pulse, so the source matrix and range are taken from the stream's tags when present and
otherwise chosen by the usual rule (BT.709 for height >= 720, else BT.601; limited range unless the
pixel format is a full-range ``yuvj*`` one), passed to swscale explicitly and logged.

One swscale context serves a whole video: ``VideoFrame.reformat`` builds a new one per call, which
cost about 0.4 ms per 640x480 frame here (half of decode-to-RGB). ``iter_video(path, yuv=True)``
yields :class:`Yuv420Frame` objects for 4:2:0 streams instead of RGB arrays, for consumers (the
face cropper) that need RGB only for a part of each frame.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.errors import RpmError

log = logging.getLogger(__name__)

# AVColorSpace (libavutil/pixfmt.h) -> swscale colour matrix name understood by PyAV's reformat.
_AVCOL_SPC = {1: "itu709", 4: "fcc", 5: "itu601", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_AVCOL_RANGE = {1: "MPEG", 2: "JPEG"}


class VideoError(RpmError, RuntimeError):
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


_YUV420 = ("yuv420p", "yuvj420p")


class Yuv420Frame:
    """One decoded 4:2:0 frame kept as its planes: 1.5 bytes per pixel, half of an RGB frame.

    ``shape`` is (H, W, 3) and ``dtype`` uint8, as for the RGB frame it stands for. RGB is made
    only where asked (:meth:`region`, :meth:`rgb`), with the conversion :func:`iter_video` applies to
    whole frames (same matrix and range, same swscale routine). swscale's unscaled 4:2:0 -> RGB
    routine computes each pixel from its own luma sample and the chroma sample of its 2x2 block, so
    a region cut on even coordinates converts bit-identically to the same region of the whole
    converted frame (``tests/test_video_yuv.py`` checks this for BT.601/709, limited/full range,
    odd offsets and frame edges). The face cropper converts a face box, not every pixel.
    """

    __slots__ = ("luma", "cb", "cr", "pix_fmt", "conv", "_converter", "__weakref__")
    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, luma, cb, cr, pix_fmt: str, conv: ColourConversion, converter=None):
        """``luma`` (H, W), ``cb`` and ``cr`` (H/2, W/2) uint8 planes with H and W even (views of the
        decoder's buffers are fine: a frame is never written again once decoded). ``converter`` is an
        ``av.video.reformatter.VideoReformatter`` reused by :meth:`region` (one thread at a time);
        without one each call makes its own."""
        if pix_fmt not in _YUV420:
            raise ValueError(f"not a 4:2:0 pixel format: {pix_fmt}")
        h, w = luma.shape
        if h % 2 or w % 2 or any(p.dtype != np.uint8 for p in (luma, cb, cr)):
            raise ValueError(f"expected uint8 planes with an even height and width, got luma {luma.shape}")
        if cb.shape != (h // 2, w // 2) or cr.shape != (h // 2, w // 2):
            raise ValueError(f"chroma planes {cb.shape}, {cr.shape} do not fit luma {luma.shape}")
        self.luma, self.cb, self.cr = luma, cb, cr
        self.pix_fmt, self.conv, self._converter = pix_fmt, conv, converter

    @classmethod
    def from_packed(cls, packed: np.ndarray, pix_fmt: str, conv: ColourConversion, converter=None):
        """From PyAV's packed (H * 3/2, W) layout (``VideoFrame.to_ndarray()`` of a 4:2:0 frame)."""
        rows, w = packed.shape
        h = rows * 2 // 3
        if rows * 2 % 3 or h % 2 or w % 2:
            raise ValueError(
                f"expected a packed (H*3/2, W) 4:2:0 frame with an even height and width, got {packed.shape}"
            )
        flat = packed.reshape(-1)
        cb = flat[h * w : h * w * 5 // 4].reshape(h // 2, w // 2)
        return cls(
            flat[: h * w].reshape(h, w),
            cb,
            flat[h * w * 5 // 4 :].reshape(h // 2, w // 2),
            pix_fmt,
            conv,
            converter,
        )

    @classmethod
    def from_av(cls, frame, conv: ColourConversion, converter=None):
        """Views of a decoded ``av.VideoFrame``'s planes (no copy; the arrays keep the frame alive)."""
        h, w = frame.height, frame.width
        planes = [
            np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:ph, :pw]
            for plane, (ph, pw) in zip(
                frame.planes, ((h, w), (h // 2, w // 2), (h // 2, w // 2)), strict=True
            )
        ]
        return cls(*planes, frame.format.name, conv, converter)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.luma.shape[0], self.luma.shape[1], 3

    def region(self, x0: int, y0: int, x1: int, y1: int, converter=None) -> np.ndarray:
        """RGB pixels [y0:y1, x0:x1] (integers, inside the frame): a (y1-y0, x1-x0, 3) uint8 array."""
        import av
        from av.video.reformatter import VideoReformatter

        h, w, _ = self.shape
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"region x {x0}..{x1}, y {y0}..{y1} is not inside a {w}x{h} frame")
        ex0, ey0 = x0 - x0 % 2, y0 - y0 % 2  # whole 2x2 chroma blocks
        ex1, ey1 = x1 + x1 % 2, y1 + y1 % 2
        # PyAV wraps a packed 4:2:0 buffer without copying it (from_numpy_buffer, 15x cheaper than
        # from_ndarray's copy) only when its height is a multiple of 4: take two more rows (each
        # output row depends only on its own luma row and chroma row, so the rows asked for do not
        # change) and cut them off after the conversion
        if (ey1 - ey0) % 4:
            if ey1 + 2 <= h:
                ey1 += 2
            elif ey0 >= 2:
                ey0 -= 2
        rw, rh = ex1 - ex0, ey1 - ey0
        n = rw * rh
        # a spare tail: swscale's SIMD loops may read a few bytes past the end of the last row
        buf = np.empty(n * 3 // 2 + 64, np.uint8)
        buf[:n].reshape(rh, rw)[...] = self.luma[ey0:ey1, ex0:ex1]
        buf[n : n + n // 4].reshape(rh // 2, rw // 2)[...] = self.cb[ey0 // 2 : ey1 // 2, ex0 // 2 : ex1 // 2]
        buf[n + n // 4 : n * 3 // 2].reshape(rh // 2, rw // 2)[...] = self.cr[
            ey0 // 2 : ey1 // 2, ex0 // 2 : ex1 // 2
        ]
        packed = buf[: n * 3 // 2].reshape(-1, rw)
        if rh % 4:  # a frame 2 rows short of a multiple of 4, converted whole: copied
            frame = av.VideoFrame.from_ndarray(packed, format=self.pix_fmt)
        else:
            frame = av.VideoFrame.from_numpy_buffer(packed, format=self.pix_fmt)
        converter = converter or self._converter or VideoReformatter()
        rgb = _to_rgb(converter, frame, self.conv, threads=1)  # a face box is too small to split
        return rgb[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]

    def rgb(self, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The whole frame, or its integer ``box`` (x0, y0, x1, y1), as RGB uint8, with a converter
        of its own (safe in a helper thread beside :meth:`region` calls)."""
        from av.video.reformatter import VideoReformatter

        h, w, _ = self.shape
        return self.region(*(box or (0, 0, w, h)), converter=VideoReformatter())


def _to_rgb(converter, frame, conv: ColourConversion, threads: int | None = None) -> np.ndarray:
    """The one YUV -> RGB conversion (explicit matrix and range, full-range RGB out)."""
    out = converter.reformat(
        frame,
        format="rgb24",
        src_colorspace=conv.matrix,
        src_color_range=conv.range,
        dst_color_range="JPEG",
        threads=threads,
    )
    return out.to_ndarray()


def iter_video(path: str | Path, yuv: bool = False) -> tuple[float, Iterator]:
    """``(fps, frames)``: the frame rate and a generator of RGB frames (H, W, 3) uint8, decoded one at a
    time (memory stays one frame). Errors as :func:`read_video`; a generator that yields nothing raises
    :class:`VideoError` when exhausted.

    ``yuv=True``: frames of a 4:2:0 stream (yuv420p / yuvj420p, even size) come as
    :class:`Yuv420Frame` objects, converted to RGB only where the consumer asks; other pixel formats
    still come as RGB arrays."""
    import av
    from av.video.reformatter import VideoReformatter

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: {'a folder, not a video file' if path.is_dir() else 'no such file'}")
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
                converter, region_converter = VideoReformatter(), VideoReformatter()
                for frame in container.decode(stream):  # flushes the decoder at the end
                    if conv is None:
                        conv = colour_conversion(frame)
                        log.info("%s: %s", path.name, conv)
                    n += 1
                    fmt = frame.format.name
                    if yuv and fmt in _YUV420 and frame.width % 2 == 0 and frame.height % 2 == 0:
                        yield Yuv420Frame.from_av(frame, conv, region_converter)
                    else:
                        yield _to_rgb(converter, frame, conv)
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise VideoError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from exc
        if n == 0:
            raise VideoError(f"{path}: the video stream has no decodable frames")

    return fps, frames()


def prefetch(items: Iterator, depth: int, name: str = "prefetch") -> Iterator:
    """Run the iterator ``items`` in a helper thread, at most ``depth`` items ahead of the consumer.

    PyAV's frame-threaded decoder decodes only while its caller is asking for frames: a consumer
    that spends a while on some frames (the face cropper cutting a block of 30 faces at once) leaves
    the decoder's threads idle meanwhile, and they can then run only a few frames ahead. With the
    decoding loop in its own thread they keep going (decoding releases the GIL).

    Items come out in order. An exception raised by ``items`` is raised here, after the items before
    it. Closing this generator (or dropping it) stops the helper thread after at most the item it is
    producing, and ``items`` is closed in that thread (a generator must be closed by the thread that
    runs it). ``depth`` bounds memory: at most ``depth`` + 1 items are alive in the helper.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((None, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, exc = buffer.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


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
