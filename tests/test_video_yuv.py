"""Frames kept in YUV 4:2:0 (pipeline.video.Yuv420Frame): a region converted on its own must equal the
same region of the whole converted frame, bit for bit, or the face cropper's YUV path would store
different pixels from the RGB path it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.video import ColourConversion, Yuv420Frame, _to_rgb, iter_video, write_video


def packed_planes(h: int, w: int, seed: int) -> np.ndarray:
    """(H*3/2, W) uint8 planes with smooth structure plus noise, covering the whole code range."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    luma = 128 + 100 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + rng.normal(0, 20, (h, w))
    yc, xc = np.mgrid[0 : h // 2, 0 : w // 2]
    cb = 128 + 110 * np.sin(xc / 5.0 + yc / 9.0) + rng.normal(0, 15, (h // 2, w // 2))
    cr = 128 + 110 * np.cos(xc / 6.0 - yc / 4.0) + rng.normal(0, 15, (h // 2, w // 2))
    flat = np.concatenate([p.reshape(-1) for p in (luma, cb, cr)])
    return np.clip(flat, 0, 255).astype(np.uint8).reshape(-1, w)


@pytest.mark.parametrize(
    "h, w, pix_fmt, matrix, crange",
    [
        (480, 640, "yuv420p", "itu601", "MPEG"),
        (720, 1280, "yuv420p", "itu709", "MPEG"),
        (240, 322, "yuvj420p", "itu601", "JPEG"),  # width not a multiple of 4 or 16
        (98, 134, "yuv420p", "bt2020", "JPEG"),  # height 2 short of a multiple of 4
        (10, 14, "yuv420p", "itu601", "MPEG"),
    ],
)
def test_region_equals_the_same_region_of_the_whole_frame(h, w, pix_fmt, matrix, crange):
    import av
    from av.video.reformatter import VideoReformatter

    packed = packed_planes(h, w, seed=h + w)
    conv = ColourConversion(matrix, crange, tagged=True)
    whole = _to_rgb(VideoReformatter(), av.VideoFrame.from_ndarray(packed, format=pix_fmt), conv)
    frame = Yuv420Frame.from_packed(packed, pix_fmt, conv, VideoReformatter())
    assert frame.shape == (h, w, 3) == whole.shape and frame.dtype == np.uint8
    assert np.array_equal(frame.rgb(), whole)
    rng = np.random.default_rng(0)
    # whole frame; corners; regions 2 rows high at the top and bottom edges (widened by two rows
    # inside the frame before conversion, then cut back)
    boxes = [(0, 0, w, h), (0, 0, 1, 1), (w - 1, h - 1, w, h), (1, 3, w - 1, h - 3), (0, 0, w, 2)]
    boxes += [(0, h - 2, w, h), (3, h - 6, w - 1, h)]
    for _ in range(40):  # odd and even offsets and sizes, some touching the edges
        x0, y0 = int(rng.integers(0, w - 2)), int(rng.integers(0, max(1, h - 2)))
        boxes.append((x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1))))
    for x0, y0, x1, y1 in boxes:
        got = frame.region(x0, y0, x1, y1)
        assert got.shape == (y1 - y0, x1 - x0, 3)
        assert np.array_equal(got, whole[y0:y1, x0:x1]), (x0, y0, x1, y1)


def test_iter_video_yuv_frames_match_its_rgb_frames(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (12, 96, 160, 3), dtype=np.uint8)
    write_video(tmp_path / "v.mp4", frames)
    fps, rgb = iter_video(tmp_path / "v.mp4")
    fps2, yuv = iter_video(tmp_path / "v.mp4", yuv=True)
    rgb, yuv = list(rgb), list(yuv)
    assert fps == fps2 and len(rgb) == len(yuv) == 12
    for a, b in zip(rgb, yuv, strict=True):
        assert isinstance(b, Yuv420Frame) and b.pix_fmt == "yuv420p" and b.conv.matrix == "itu601"
        assert np.array_equal(b.rgb(), a)
        assert np.array_equal(b.region(37, 11, 120, 90), a[11:90, 37:120])


def test_bad_frames_and_regions_are_refused():
    conv = ColourConversion("itu601", "MPEG", tagged=False)
    with pytest.raises(ValueError, match="4:2:0"):
        Yuv420Frame.from_packed(packed_planes(8, 8, 0), "yuv444p", conv)
    with pytest.raises(ValueError, match="even"):
        Yuv420Frame.from_packed(np.zeros((7, 8), np.uint8), "yuv420p", conv)  # not 3/2 of an even height
    with pytest.raises(ValueError, match="even"):
        Yuv420Frame.from_packed(np.zeros((12, 7), np.uint8), "yuv420p", conv)  # odd width
    with pytest.raises(ValueError, match="do not fit"):
        Yuv420Frame(
            np.zeros((8, 8), np.uint8),
            np.zeros((4, 4), np.uint8),
            np.zeros((4, 3), np.uint8),
            "yuv420p",
            conv,
        )
    frame = Yuv420Frame.from_packed(packed_planes(8, 8, 0), "yuv420p", conv)
    for box in [(0, 0, 9, 8), (-1, 0, 4, 4), (3, 3, 3, 5)]:
        with pytest.raises(ValueError, match="inside"):
            frame.region(*box)
