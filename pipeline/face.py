"""MTCNN face cropping for raw video (facenet-pytorch, bundled weights, fully offline).

Main entry point, used by ``rpm predict`` and by dataset recipes that start from full frames::

    crops, detection_rate, boxes = crop_faces(frames, fps)
    # frames (T, H, W, 3) uint8 RGB -> crops (T, 128, 128, 3) uint8, detection_rate float in [0, 1],
    # boxes (T, 4) float32 crop boxes (x0, y0, x1, y1) in full-frame pixels

Recipe (reference f.4 #18):

1. **Detect every k frames** (``detect_every``, default round(fps), about 1 s; frames 0, k, 2k, ...
   and the last frame), in batches, on frames downscaled so the longer side is at most
   ``detect_side`` (320) px. MTCNN's ``min_face_size`` is set to ``min_face_frac`` (0.1) of the
   longer side at that scale (at least 12 px), i.e. faces of 64 px and up in a 640x480 video: a
   sensible minimum for a face meant for rPPG, and it keeps the image pyramid (the cost) small.
   The largest face of each frame is kept.
2. :func:`detect_boxes` wraps ``MTCNN.detect``, whose return type changes with the input (object
   arrays with ``None`` for frames without a face; a regular (N, k, 4) array when every frame has
   the same face count), so it always returns ``(N, 4) float32`` boxes and an ``(N,) bool`` mask.
3. The detected boxes (centre and size) are smoothed over neighbouring detections (a 3-tap
   moving average of keyframes), then linearly interpolated to every frame; frames before the first
   or after the last detection hold the nearest one.
4. Each box is made square (side = max(w, h)), enlarged 1.5x about its centre and clamped to the
   frame (shifted inside; shrunk to the frame's short side if larger).
5. The crop is resized to 128x128 with area averaging (PIL ``BOX``).

``detection_rate`` is the share of detection frames where a face was found. If no face is found at
all, :class:`FaceNotFoundError` is raised: a full frame is never passed on as a face.

For a video file, :func:`scan_video` + :func:`crop_video` do the same in two decoding passes without
holding the full frames (the first keeps only the downscaled keyframes, the second crops frame by
frame), so memory is the 128x128 crops (49 KB per frame) instead of the full frames (0.9 MB per
640x480 frame, 6 MB at 1080p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

CROP_SIZE = 128
ENLARGE = 1.5
DETECT_SIDE = 320
MIN_FACE_FRAC = 0.1
DETECT_BATCH = 16


class FaceNotFoundError(RuntimeError):
    """MTCNN found no face in any detection frame."""


def _device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@lru_cache(maxsize=4)
def get_mtcnn(device: str = "cpu", min_face_size: int = 20):
    """A cached facenet-pytorch MTCNN with its bundled P/R/O-Net weights (no download)."""
    from facenet_pytorch import MTCNN

    return MTCNN(device=device, min_face_size=min_face_size, select_largest=True, keep_all=False)


def detect_boxes(mtcnn, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest face per image: ``(boxes (N, 4) float32 x0 y0 x1 y1, found (N,) bool)``.

    ``images`` is (N, H, W, 3) uint8 RGB, all the same size. Rows without a face are NaN.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got {images.shape}")
    n = images.shape[0]
    out = np.full((n, 4), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    if n == 0:
        return out, found
    raw, _ = mtcnn.detect(images)
    if raw is None:  # facenet-pytorch returns None for a batch when nothing at all was found
        return out, found
    for i in range(n):
        entry = raw[i]
        if entry is None:
            continue
        arr = np.asarray(entry, dtype=np.float64).reshape(-1, 4)
        if arr.size == 0 or not np.isfinite(arr[0]).all():
            continue
        out[i], found[i] = arr[0], True  # select_largest: the largest face comes first
    return out, found


def _downscale(frames: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return frames
    h, w = frames.shape[1:3]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def _smooth_keyframes(boxes: np.ndarray) -> np.ndarray:
    """3-tap moving average (edges: 2-tap) of keyframe boxes as centre + size."""
    if len(boxes) < 3:
        return boxes
    padded = np.concatenate([boxes[:1], boxes, boxes[-1:]])
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0


def square_crop_boxes(boxes: np.ndarray, height: int, width: int, enlarge: float = ENLARGE) -> np.ndarray:
    """(T, 4) face boxes -> square boxes enlarged ``enlarge`` x about the centre, clamped to the frame."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * enlarge
    side = np.clip(side, 8.0, min(height, width))
    x0 = np.clip(cx - side / 2.0, 0.0, width - side)
    y0 = np.clip(cy - side / 2.0, 0.0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.float32)


def _key_indices(t: int, k: int) -> list[int]:
    return sorted(set(range(0, t, k)) | {t - 1})


def track_keyframes(
    key_idx: list[int],
    key_images: np.ndarray,
    n_frames: int,
    frame_hw: tuple[int, int],
    scale: float,
    device: str | None = None,
    mtcnn=None,
    min_face_frac: float = MIN_FACE_FRAC,
) -> tuple[np.ndarray, float]:
    """Detect on the downscaled keyframes, then smooth and interpolate: face boxes (n_frames, 4) in
    full-frame pixels (before enlarging) and the detection rate."""
    min_face = max(12, int(min_face_frac * max(frame_hw) * scale))
    mtcnn = mtcnn or get_mtcnn(_device(device), min_face)
    boxes = np.full((len(key_idx), 4), np.nan, dtype=np.float32)
    found = np.zeros(len(key_idx), dtype=bool)
    for s in range(0, len(key_idx), DETECT_BATCH):
        b, f = detect_boxes(mtcnn, key_images[s : s + DETECT_BATCH])
        boxes[s : s + len(b)], found[s : s + len(b)] = b / scale, f
    rate = float(found.mean())
    if not found.any():
        raise FaceNotFoundError(f"no face found in any of the {len(key_idx)} detection frames")
    key = np.asarray(key_idx)[found]
    kb = boxes[found].astype(np.float64)
    centre_size = np.stack(
        [(kb[:, 0] + kb[:, 2]) / 2, (kb[:, 1] + kb[:, 3]) / 2, kb[:, 2] - kb[:, 0], kb[:, 3] - kb[:, 1]], 1
    )
    centre_size = _smooth_keyframes(centre_size)
    frame_idx = np.arange(n_frames)
    cs = np.stack([np.interp(frame_idx, key, centre_size[:, j]) for j in range(4)], axis=1)
    full = np.stack(
        [cs[:, 0] - cs[:, 2] / 2, cs[:, 1] - cs[:, 3] / 2, cs[:, 0] + cs[:, 2] / 2, cs[:, 1] + cs[:, 3] / 2],
        1,
    )
    return full.astype(np.float32), rate


def track_boxes(
    frames: np.ndarray,
    fps: float,
    detect_every: int | None = None,
    detect_side: int = DETECT_SIDE,
    device: str | None = None,
    mtcnn=None,
    min_face_frac: float = MIN_FACE_FRAC,
) -> tuple[np.ndarray, float]:
    """Face boxes for every frame (T, 4) in full-frame pixels (before enlarging) and the detection rate."""
    t, h, w = frames.shape[:3]
    key_idx = _key_indices(t, detect_every or max(1, int(round(fps))))
    scale = min(1.0, detect_side / max(h, w))
    return track_keyframes(
        key_idx, _downscale(frames[key_idx], scale), t, (h, w), scale, device, mtcnn, min_face_frac
    )


def crop_boxes(frames: np.ndarray, boxes: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Crop (T, 4) boxes out of (T, H, W, 3) frames and area-resize them to (T, size, size, 3) uint8."""
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        out[i] = np.asarray(
            Image.fromarray(frame).resize((size, size), Image.BOX, box=tuple(float(v) for v in box))
        )
    return out


def crop_faces(
    frames: np.ndarray,
    fps: float,
    size: int = CROP_SIZE,
    detect_every: int | None = None,
    enlarge: float = ENLARGE,
    detect_side: int = DETECT_SIDE,
    device: str | None = None,
    mtcnn=None,
    min_face_frac: float = MIN_FACE_FRAC,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Face crops of a video: ``(crops (T, size, size, 3) uint8, detection_rate, boxes (T, 4) float32)``.

    ``frames`` is (T, H, W, 3) uint8 RGB at ``fps``. ``boxes`` are the square crop boxes (x0, y0, x1,
    y1) in full-frame pixels, after enlarging and clamping. ``detect_every`` defaults to round(fps)
    frames; ``device`` to CUDA when available; ``mtcnn`` may be a ready ``facenet_pytorch.MTCNN``
    (then ``min_face_frac`` is ignored). Raises :class:`FaceNotFoundError` when no detection
    frame has a face, and ``ValueError`` for malformed input. See the module docstring.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected non-empty (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    face, rate = track_boxes(frames, fps, detect_every, detect_side, device, mtcnn, min_face_frac)
    boxes = square_crop_boxes(face, frames.shape[1], frames.shape[2], enlarge)
    return crop_boxes(frames, boxes, size), rate, boxes


# ----------------------------------------------------------------------------------- streaming


@dataclass
class VideoScan:
    """First pass over a video file: its size and rate and the downscaled detection keyframes."""

    path: Path
    fps: float
    n_frames: int
    height: int
    width: int
    scale: float
    key_idx: list[int]
    key_images: np.ndarray  # (K, h, w, 3) uint8 at ``scale``


def scan_video(path, detect_every: int | None = None, detect_side: int = DETECT_SIDE) -> VideoScan:
    """Decode ``path`` once, keeping only the downscaled keyframes (every ~1 s and the last frame).

    Memory is one full frame plus the small keyframes, whatever the video's length.
    """
    from pipeline.video import iter_video

    fps, frames = iter_video(path)
    k = detect_every or max(1, int(round(fps)))
    keys, images, last = [], [], None
    n, h, w, scale = 0, 0, 0, 1.0
    for i, frame in enumerate(frames):
        if i == 0:
            h, w = frame.shape[:2]
            scale = min(1.0, detect_side / max(h, w))
        if i % k == 0:
            keys.append(i)
            images.append(_downscale(frame[None], scale)[0])
        else:
            last = frame
        n = i + 1
    if keys[-1] != n - 1:
        keys.append(n - 1)
        images.append(_downscale(last[None], scale)[0])
    return VideoScan(Path(path), fps, n, h, w, scale, keys, np.stack(images))


def crop_video(
    scan: VideoScan,
    size: int = CROP_SIZE,
    enlarge: float = ENLARGE,
    device: str | None = None,
    mtcnn=None,
    min_face_frac: float = MIN_FACE_FRAC,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Second pass of the streaming cropper: :func:`crop_faces` for a file, one frame in memory at a time.

    Returns (crops (T, size, size, 3) uint8, detection_rate, boxes (T, 4)) like :func:`crop_faces`.
    """
    from pipeline.video import iter_video

    face, rate = track_keyframes(
        scan.key_idx,
        scan.key_images,
        scan.n_frames,
        (scan.height, scan.width),
        scan.scale,
        device,
        mtcnn,
        min_face_frac,
    )
    boxes = square_crop_boxes(face, scan.height, scan.width, enlarge)
    crops = np.empty((scan.n_frames, size, size, 3), dtype=np.uint8)
    _, frames = iter_video(scan.path)
    n = 0
    for i, frame in enumerate(frames):
        if i >= scan.n_frames:
            break
        crops[i] = crop_boxes(frame[None], boxes[i : i + 1], size)[0]
        n = i + 1
    if n != scan.n_frames:
        raise RuntimeError(
            f"{scan.path}: decoded {n} frames on the second pass, {scan.n_frames} on the first"
        )
    return crops, rate, boxes
