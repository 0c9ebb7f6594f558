"""MTCNN face cropping for raw video (facenet-pytorch, bundled weights, fully offline), in one
streaming pass.

Entry points::

    crops, detection_rate, boxes = crop_faces(frames, fps)           # an in-memory (T, H, W, 3) array
    fps, cropper, blocks = open_video_crops(path)                     # a video file, streamed
    for block in blocks: ...                                          # (n, 128, 128, 3) uint8, in order
    cropper.detection_rate, cropper.n_frames, cropper.box_array()     # once the blocks are consumed

Recipe (MTCNN, Zhang et al. 2016, as in the paper's Sec. 4.2), implemented once, by :class:`FaceCropper`:

1. **Detect every k frames** (``detect_every``, default round(fps), about 1 s: frames 0, k, 2k, ...
   and the last frame) on a copy downscaled so the longer side is at most ``detect_side`` (320) px.
   MTCNN's ``min_face_size`` is ``min_face_frac`` (0.1) of the longer side at that scale (at least
   12 px), i.e. faces of 64 px and up in a 640x480 video: a sensible minimum for a face meant for
   rPPG, and it keeps the image pyramid (the cost) small. The largest face of a frame is kept.
   Once a face is known, a keyframe is first **tracked**: MTCNN's last stage (O-Net) alone re-fits
   the previous keyframe's face box, twice, and the face is kept when both fits are confident and
   agree (:meth:`FaceCropper._track`; 3-5 ms instead of 10-30 ms for a detection here). If not
   (face gone, turned away, moved far), the keyframe is searched in a square ``roi_side`` (2.5)
   times the previous face's size around it, and the whole frame only if no face comes out well
   inside that region (:meth:`FaceCropper._detect`). Detection (with the keyframe's RGB
   conversion and downscale) runs in a helper thread while the next frames decode; on the CPU the
   nets run channels-last (:func:`get_mtcnn`).
2. :func:`detect_boxes` wraps ``MTCNN.detect``, whose return type changes with the input (object
   arrays with ``None`` for frames without a face; a regular (N, k, 4) array when every frame has
   the same face count), so it always returns ``(N, 4) float32`` boxes and an ``(N,) bool`` mask.
3. The boxes of the keyframes with a face (centre and size) are smoothed with a 3-tap moving average
   (the first and last repeated at the ends), then linearly interpolated to every frame; frames
   before the first detection hold the first box, frames after the last hold the last.
4. Each box is made square (side = max(w, h)), enlarged 1.5x about its centre and clamped to the
   frame (shifted inside; shrunk to the frame's short side if larger).
5. The crop is resized to 128x128 with area averaging (PIL ``BOX``, sub-pixel box), cut from the
   frame first so only the face region is touched. Video files are decoded to 4:2:0 planes
   (:class:`pipeline.video.Yuv420Frame`) and only the face region is converted to RGB, bit-identical
   to converting the whole frame and cutting the region, without converting the ~90 % of each
   frame that is not face.

Memory is bounded whatever the video's length: a frame waits only until the smoothed boxes on both
sides of it are known (about 3 s of full frames with one detection in flight, at 1.5 bytes per
pixel from a video file). Two rules keep it bounded when faces are missing for long: (a) if no face
has been found yet after 3 s + ``max_pending_s`` (2 s), the waiting frames are dropped and decoded
again from the start once the first face is found (so the lead-in still gets the first box); (b) if
a face is lost for longer than that later on, the frames that overflow are cropped with the last box
(smoothed as at the end of a video) and interpolation restarts from there when a face comes back.
The detection rate records every missed keyframe. Detection runs in ``in_flight`` (1) helper
threads: more lets a keyframe's detection overlap the next one's, but a keyframe's hint (the face
found at the keyframe ``in_flight`` keyframes earlier) is then older, and tracking fails more often.

``detection_rate`` is the share of detection frames with a face. If no face is found at all,
:class:`FaceNotFoundError` is raised: a full frame is never passed on as a face.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import RpmError

CROP_SIZE = 128
ENLARGE = 1.5
DETECT_SIDE = 320
MIN_FACE_FRAC = 0.1
MAX_PENDING_S = 2.0
IN_FLIGHT = 1
ROI_SIDE = 2.5
TRACK = True
TRACK_PROB = 0.9  # O-Net face probability a tracked face needs (MTCNN's own last-stage threshold: 0.7)
TRACK_AGREE = 0.6  # IoU the two O-Net fits of a tracked face must reach (the fit has converged)
PREFETCH_FRAMES = 32  # decoded ahead of the cropper (about 1 s; 15 MB of 640x480 4:2:0 frames)


class FaceNotFoundError(RpmError, RuntimeError):
    """MTCNN found no face in any detection frame."""


def _device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@lru_cache(maxsize=4)
def get_mtcnn(device: str = "cpu", min_face_size: int = 20):
    """A cached facenet-pytorch MTCNN with its bundled P/R/O-Net weights (no download).

    On the CPU its nets run channels-last: PyTorch's CPU max-pooling of the R/O-Net feature maps is
    about 10x slower in NCHW, and the whole detection about 1.4x (same boxes within 1e-3 px, tested).
    """
    import torch
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(device=device, min_face_size=min_face_size, select_largest=True, keep_all=False)
    if torch.device(device).type == "cpu":
        mtcnn = mtcnn.to(memory_format=torch.channels_last)
    return mtcnn


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
    import torch

    # handed over as an NHWC view of planar (NCHW) memory: MTCNN permutes it to NCHW, and its image
    # pyramid (area resampling of the whole image per scale) is ~30% cheaper on planar memory
    planar = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).permute(0, 2, 3, 1)
    raw, _ = mtcnn.detect(planar)
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


def _downscale(frame: np.ndarray, scale: float) -> np.ndarray:
    """One (H, W, 3) frame bilinearly resized by ``scale`` (< 1), for detection."""
    if scale >= 1.0:
        return frame
    h, w = frame.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # reducing_gap=1: an integer box reduction first, then bilinear for the rest (4x cheaper than
    # one bilinear pass over a 640x480 frame; the detector does not need the finer filter)
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR, reducing_gap=1.0))


def square_crop_boxes(boxes: np.ndarray, height: int, width: int, enlarge: float = ENLARGE) -> np.ndarray:
    """(T, 4) face boxes -> square boxes enlarged ``enlarge`` x about the centre, clamped to the frame."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * enlarge
    side = np.clip(side, 8.0, min(height, width))
    x0 = np.clip(cx - side / 2.0, 0.0, width - side)
    y0 = np.clip(cy - side / 2.0, 0.0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.float32)


def square_resize(im: Image.Image, size: int = CROP_SIZE) -> Image.Image:
    """A PIL image resized to (size, size): area averaging (BOX) when shrinking, bilinear when
    enlarging; an image already that size is returned as is."""
    if im.size == (size, size):
        return im
    shrink = im.size[0] >= size and im.size[1] >= size
    return im.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)


def _rgb(frame, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A whole frame, or its integer ``box`` (x0, y0, x1, y1), as a uint8 RGB array (a
    :class:`pipeline.video.Yuv420Frame` is converted, safely in any thread)."""
    if not isinstance(frame, np.ndarray):
        return frame.rgb(box)
    return frame if box is None else np.ascontiguousarray(frame[box[1] : box[3], box[0] : box[2]])


def _well_inside(box: np.ndarray, roi: tuple[int, int, int, int], height: int, width: int) -> bool:
    """Whether a face ``box`` found in ``roi`` keeps a margin (10 % of its size) from every edge of
    the region that is not also a frame edge: a face cut by the region's edge gives a truncated box."""
    margin = 0.1 * max(box[2] - box[0], box[3] - box[1])
    x0, y0, x1, y1 = roi
    return bool(
        (x0 == 0 or box[0] >= x0 + margin)
        and (y0 == 0 or box[1] >= y0 + margin)
        and (x1 == width or box[2] <= x1 - margin)
        and (y1 == height or box[3] <= y1 - margin)
    )


def _square(box: np.ndarray) -> np.ndarray:
    """A box made square (side = its longer side) about its centre, as MTCNN squares candidates."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    half = max(box[2] - box[0], box[3] - box[1]) / 2.0
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0 y0 x1 y1 boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_difference(boxes: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far (T, 4) square crop boxes are from ``reference`` ones, frame by frame: the distance
    between centres and the difference of sides, each as a share of the reference side."""
    a, b = np.asarray(boxes, np.float64), np.asarray(reference, np.float64)
    side = b[:, 2] - b[:, 0]
    dx = (a[:, 0] + a[:, 2] - b[:, 0] - b[:, 2]) / 2
    dy = (a[:, 1] + a[:, 3] - b[:, 1] - b[:, 3]) / 2
    return np.hypot(dx, dy) / side, np.abs((a[:, 2] - a[:, 0]) - side) / side


def crop_box(frame, box, size: int = CROP_SIZE) -> np.ndarray:
    """Area-resize the sub-pixel ``box`` (x0, y0, x1, y1) of one (H, W, 3) frame to (size, size, 3).

    ``frame`` is an RGB array or a :class:`pipeline.video.Yuv420Frame`. Only the pixels under the box
    are converted and handed to PIL: the result equals resizing the whole RGB frame with ``box=``
    (PIL's BOX filter reads pixels round(x0)..round(x1) only), at a fraction of the cost.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = frame.shape[:2]
    ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    ix1, iy1 = min(w, math.ceil(x1)), min(h, math.ceil(y1))
    if isinstance(frame, np.ndarray):
        sub = Image.fromarray(np.ascontiguousarray(frame[iy0:iy1, ix0:ix1]))
    else:
        sub = Image.fromarray(frame.region(ix0, iy0, ix1, iy1))
    return np.asarray(sub.resize((size, size), Image.BOX, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0)))


def crop_boxes(frames, boxes: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Crop (T, 4) boxes out of T (H, W, 3) frames (arrays or :class:`pipeline.video.Yuv420Frame`)
    and area-resize them to (T, size, size, 3) uint8."""
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        out[i] = crop_box(frame, box, size)
    return out


def _one_torch_thread() -> None:
    """Detection runs beside decoding and cropping: one intra-op thread for it (OpenMP's thread
    count is per calling thread, so the rest of the process keeps its own)."""
    import torch

    torch.set_num_threads(1)


def _centre_size(box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])


def _corners(cs: np.ndarray) -> np.ndarray:
    """(n, 4) centre-size rows -> (n, 4) x0 y0 x1 y1."""
    return np.stack(
        [cs[:, 0] - cs[:, 2] / 2, cs[:, 1] - cs[:, 3] / 2, cs[:, 0] + cs[:, 2] / 2, cs[:, 1] + cs[:, 3] / 2],
        1,
    )


class FaceCropper:
    """The streaming face cropper (module docstring): feed it frames, get 128x128 crops in order.

    ``fps`` is the video rate (sets ``detect_every`` = round(fps) frames unless given); ``device``
    defaults to CUDA when available; ``mtcnn`` may be a ready ``facenet_pytorch.MTCNN`` (then
    ``min_face_frac`` is ignored). After :meth:`crops` is exhausted: ``n_frames``,
    ``detection_rate`` and :meth:`box_array` (the square crop boxes, x0 y0 x1 y1 in pixels).
    """

    def __init__(
        self,
        fps: float,
        size: int = CROP_SIZE,
        detect_every: int | None = None,
        enlarge: float = ENLARGE,
        detect_side: int = DETECT_SIDE,
        device: str | None = None,
        mtcnn=None,
        min_face_frac: float = MIN_FACE_FRAC,
        max_pending_s: float = MAX_PENDING_S,
        in_flight: int = IN_FLIGHT,
        roi_side: float | None = ROI_SIDE,
        track: bool = TRACK,
    ):
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps, self.size, self.enlarge = float(fps), size, enlarge
        self.k = int(detect_every or max(1, int(round(fps))))
        self.detect_side, self.device, self.mtcnn, self.min_face_frac = (
            detect_side,
            device,
            mtcnn,
            min_face_frac,
        )
        # a frame normally waits for up to (2 + in_flight) k more frames (two keyframes ahead, and
        # the detections still running); max_pending_s more allows for keyframes where the face was
        # missed.
        self.in_flight = max(1, int(in_flight))
        self.max_pending = (2 + self.in_flight) * self.k + int(round(max_pending_s * fps))
        self.roi_side, self.track = roi_side, track
        self.frame_shape: tuple[int, ...] = ()
        self.n_frames = 0
        self.n_keys = 0
        self.n_found = 0
        self.n_track = 0  # keyframes whose face was tracked (O-Net re-fit of the previous face)
        self.n_roi = 0  # keyframes whose face was found in the region around the previous one
        self._boxes: list[np.ndarray] = []

    @property
    def detection_rate(self) -> float:
        return self.n_found / self.n_keys if self.n_keys else 0.0

    def box_array(self) -> np.ndarray:
        return np.concatenate(self._boxes).astype(np.float32) if self._boxes else np.zeros((0, 4), np.float32)

    # -- the pass ------------------------------------------------------------------------------

    def crops(self, open_frames: Callable[[], Iterable[np.ndarray]]) -> Iterator[np.ndarray]:
        """Yield (n, size, size, 3) uint8 crop blocks covering every frame, in order.

        ``open_frames()`` returns an iterator of (H, W, 3) uint8 RGB frames; it is called once more
        only if the first face appears after ``max_pending_s`` (rule (a) of the module docstring).
        Raises :class:`FaceNotFoundError` when no keyframe has a face.
        """
        self.n_frames = self.n_keys = self.n_found = self.n_track = self.n_roi = 0
        self._boxes = []
        # the newest processed keyframe's face (x0 y0 x1 y1) or None: where the next keyframe's
        # detection looks first. Results are processed in keyframe order on this thread, so the
        # hint a keyframe gets does not depend on thread timing.
        self._hint: np.ndarray | None = None
        self._open = open_frames
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        # recent (frame, raw centre-size) detections, since the last reset
        self._found: list[tuple[int, np.ndarray]] = []
        self._anchor: tuple[int, np.ndarray] | None = None  # (frame, final box): frames >= it wait
        self._lead_dropped = 0
        pool = ThreadPoolExecutor(
            max_workers=self.in_flight, thread_name_prefix="mtcnn", initializer=_one_torch_thread
        )
        inflight: deque[tuple[int, Future]] = deque()  # in keyframe order
        last: tuple[int, np.ndarray] | None = None
        try:
            for i, frame in enumerate(open_frames()):
                if i == 0:
                    self._setup(frame)
                elif frame.shape != self._shape:
                    raise ValueError(f"frame {i} is {frame.shape}, the first frame {self._shape}")
                if i % self.k == 0:
                    if len(inflight) == self.in_flight:
                        key, done = inflight.popleft()
                        yield from self._on_detection(key, done.result())
                    inflight.append((i, pool.submit(self._detect, frame, self._hint)))
                self._pending.append((i, frame))
                last = (i, frame)
                if len(self._pending) > self.max_pending:
                    yield from self._overflow()
            if last is None:
                raise ValueError("no frames")
            self.n_frames = last[0] + 1
            while inflight:
                key, done = inflight.popleft()
                yield from self._on_detection(key, done.result())
            if last[0] % self.k != 0:  # the last frame is always a keyframe
                yield from self._on_detection(last[0], self._detect(last[1], self._hint))
            if self._anchor is None and not self._found:
                raise FaceNotFoundError(f"no face found in any of the {self.n_keys} detection frames")
            yield from self._finalise_segment()
            yield from self._emit_until(self.n_frames, None)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()

    def _setup(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 frames, got {frame.shape} {frame.dtype}")
        self._shape = self.frame_shape = frame.shape
        h, w = frame.shape[:2]
        self._scale = min(1.0, self.detect_side / max(h, w))
        if self.mtcnn is None:
            self.mtcnn = get_mtcnn(
                _device(self.device), max(12, int(self.min_face_frac * max(h, w) * self._scale))
            )

    def _detect(self, frame, hint: np.ndarray | None) -> tuple[np.ndarray | None, str]:
        """The largest face of one frame in full-frame pixels (or None), and how it was found:
        ``"track"``, ``"region"`` or ``"frame"`` (runs in a detection thread).

        With a hint (the face of an earlier keyframe), the face is first tracked (:meth:`_track`).
        Failing that, MTCNN looks in a square ``roi_side`` (2.5) times the hinted face's size around
        it: a fraction of the frame, so a fraction of the image pyramid and of the candidate boxes (a
        detection about 2-3x cheaper on textured scenes). A face must come out well inside that
        region; otherwise (face moved away, cut by the region's edge, or not found) the whole frame is
        searched as without a hint.
        """
        if hint is not None and self.track:
            box = self._track(frame, hint)
            if box is not None:
                return box, "track"
        if hint is not None and self.roi_side:
            roi = self._roi(hint)
            if roi is not None:
                box = self._detect_in(frame, roi)
                if box is not None and _well_inside(box, roi, *self._shape[:2]):
                    return box, "region"
        return self._detect_in(frame, None), "frame"

    def _track(self, frame, hint: np.ndarray) -> np.ndarray | None:
        """The face near ``hint`` re-fitted by MTCNN's last stage alone, or None.

        MTCNN proposes candidates with P-Net over an image pyramid, filters them with R-Net, and fits
        the final box with O-Net: a net on a 48x48 resample of a square candidate that returns a face
        probability and corrections to the candidate's four edges. Between keyframes a face moves
        little, so the previous keyframe's face, squared as MTCNN squares its candidates, is a
        candidate already: O-Net fits it, then fits its own answer once more. The face is accepted
        when both fits have a probability of at least ``TRACK_PROB`` (0.9) and the two boxes agree
        (IoU at least ``TRACK_AGREE``, 0.6), i.e. the fit converged on a face. Otherwise the caller
        detects as usual. On the bench videos tracked crop boxes are within 2.5 % (centre) and 9 %
        (side) of full detection at every keyframe (docs/face-cropping.md).
        """
        box = hint
        fits = []
        for _ in range(2):
            fitted = self._onet_fit(frame, _square(box))
            if fitted is None or fitted[1] < TRACK_PROB:
                return None
            box = fitted[0]
            fits.append(box)
        return box if _iou(fits[0], fits[1]) >= TRACK_AGREE else None

    def _onet_fit(self, frame, cand: np.ndarray) -> tuple[np.ndarray, float] | None:
        """O-Net on the square candidate ``cand`` (full-frame pixels): ``(fitted box, face
        probability)``, or None when the candidate is not inside the frame.

        facenet-pytorch's pixel convention is kept: a box (x0, y0, x1, y1) covers the pixels
        trunc(x0) - 1 .. trunc(x1) - 1, and O-Net's corrections are in units of (x1 - x0 + 1)."""
        import torch
        from torch.nn.functional import interpolate

        h, w = self._shape[:2]
        x, y, ex, ey = (math.trunc(v) for v in cand)
        if x < 1 or y < 1 or ex > w or ey > h or ex - x < 12 or ey - y < 12:
            return None
        onet = self.mtcnn.onet
        weight = next(onet.parameters())
        patch = torch.from_numpy(_rgb(frame, (x - 1, y - 1, ex, ey))).to(weight.device)
        image = interpolate(patch.permute(2, 0, 1)[None].to(weight.dtype), size=(48, 48), mode="area")
        image = (image - 127.5) * 0.0078125  # MTCNN's input scaling
        if weight.device.type == "cpu":
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            edges, _landmarks, prob = onet(image)
        edges = edges[0].double().cpu().numpy()
        side = np.array([cand[2] - cand[0] + 1, cand[3] - cand[1] + 1] * 2)
        return cand + edges * side, float(prob[0, 1])

    def _roi(self, hint: np.ndarray) -> tuple[int, int, int, int] | None:
        """The integer search region around a face box, clamped to the frame; None when it would
        cover most of the frame anyway."""
        h, w = self._shape[:2]
        side = self.roi_side * max(hint[2] - hint[0], hint[3] - hint[1])
        cx, cy = (hint[0] + hint[2]) / 2.0, (hint[1] + hint[3]) / 2.0
        x0, y0 = max(0, math.floor(cx - side / 2)), max(0, math.floor(cy - side / 2))
        x1, y1 = min(w, math.ceil(cx + side / 2)), min(h, math.ceil(cy + side / 2))
        if x1 - x0 < 12 or y1 - y0 < 12 or (x1 - x0) * (y1 - y0) > 0.5 * w * h:
            return None
        return x0, y0, x1, y1

    def _detect_in(self, frame, roi: tuple[int, int, int, int] | None) -> np.ndarray | None:
        """MTCNN on the frame (or its ``roi``) downscaled by the detection scale: the largest face in
        full-frame pixels, or None."""
        image = _rgb(frame, roi)
        small = _downscale(image, self._scale)
        boxes, found = detect_boxes(self.mtcnn, small[None])
        if not found[0]:
            return None
        sx, sy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        box = boxes[0].astype(np.float64) / np.array([sx, sy, sx, sy])
        if roi is not None:
            box += np.array([roi[0], roi[1], roi[0], roi[1]], dtype=np.float64)
        return box

    def _on_detection(self, key: int, result: tuple[np.ndarray | None, str]) -> Iterator[np.ndarray]:
        box, how = result
        self.n_keys += 1
        self._hint = box
        if box is None:
            return
        self.n_found += 1
        self.n_track += how == "track"
        self.n_roi += how == "region"
        self._found.append((key, _centre_size(box)))
        if len(self._found) >= 2:  # the previous face's smoothed box is now final
            j = len(self._found) - 2
            left = self._found[max(0, j - 1)][1]
            smoothed = (left + self._found[j][1] + self._found[j + 1][1]) / 3.0
            yield from self._set_anchor(self._found[j][0], smoothed)
            del self._found[: max(0, j - 1)]  # keep what the next smoothing needs

    def _finalise_segment(self) -> Iterator[np.ndarray]:
        """The newest face's box as at the end of a video (last box repeated), then a fresh start."""
        if self._found:
            prev = self._found[-2][1] if len(self._found) >= 2 else self._found[-1][1]
            key, cs = self._found[-1]
            yield from self._set_anchor(key, (prev + 2.0 * cs) / 3.0)
        self._found = []

    def _set_anchor(self, key: int, cs: np.ndarray) -> Iterator[np.ndarray]:
        if self._anchor is None:  # the first box: the lead-in holds it
            if self._lead_dropped:
                yield from self._redecode_lead_in(cs)
            self._anchor = (0, cs)
        yield from self._emit_until(key, (key, cs))
        self._anchor = (key, cs) if key >= self._anchor[0] else self._anchor

    def _emit_until(self, stop: int, right: tuple[int, np.ndarray] | None) -> Iterator[np.ndarray]:
        """Crop the pending frames < ``stop``: interpolated from the anchor to ``right`` (or held)."""
        idx = []
        while self._pending and self._pending[0][0] < stop:
            idx.append(self._pending.popleft())
        if not idx:
            return
        a_key, a_cs = self._anchor
        frames = np.array([i for i, _ in idx], dtype=np.float64)
        if right is None or right[0] <= a_key:
            cs = np.repeat(a_cs[None], len(idx), axis=0)
        else:
            cs = np.stack([np.interp(frames, [a_key, right[0]], [a_cs[d], right[1][d]]) for d in range(4)], 1)
        yield self._crop([f for _, f in idx], cs)

    def _crop(self, frames: list[np.ndarray], cs: np.ndarray) -> np.ndarray:
        h, w = self._shape[:2]
        boxes = square_crop_boxes(_corners(cs).astype(np.float32), h, w, self.enlarge)
        self._boxes.append(boxes)
        return crop_boxes(frames, boxes, self.size)

    def _overflow(self) -> Iterator[np.ndarray]:
        """Too many frames wait for a face (module docstring, rules (a) and (b))."""
        if self._anchor is None and not self._found:  # (a) no face yet: drop, decode again later
            while len(self._pending) > self.max_pending:
                self._pending.popleft()
                self._lead_dropped += 1
            return
        yield from self._finalise_segment()  # (b) hold the last box for the overflow
        keep = self.max_pending - 2 * self.k
        if len(self._pending) > keep:
            stop = self._pending[len(self._pending) - keep][0]
            yield from self._emit_until(stop, None)
            self._anchor = (stop, self._anchor[1])

    def _redecode_lead_in(self, cs: np.ndarray) -> Iterator[np.ndarray]:
        self._anchor = (0, cs)
        block: list[np.ndarray] = []
        n = 0
        for i, frame in enumerate(self._open()):
            if i >= self._lead_dropped:
                break
            block.append(frame)
            n = i + 1
            if len(block) == self.k:
                yield self._crop(block, np.repeat(cs[None], len(block), axis=0))
                block = []
        if block:
            yield self._crop(block, np.repeat(cs[None], len(block), axis=0))
        if n != self._lead_dropped:
            raise RuntimeError(
                f"decoded {n} lead-in frames on the second pass, {self._lead_dropped} on the first"
            )
        self._lead_dropped = 0


def crop_faces(frames: np.ndarray, fps: float, **cropper_kwargs) -> tuple[np.ndarray, float, np.ndarray]:
    """Face crops of an in-memory video: ``(crops (T, size, size, 3) uint8, detection_rate, boxes (T, 4))``.

    ``frames`` is (T, H, W, 3) uint8 RGB at ``fps``; ``boxes`` are the square crop boxes (x0, y0,
    x1, y1) in full-frame pixels after enlarging and clamping. ``cropper_kwargs`` go to
    :class:`FaceCropper` (same recipe, same defaults). Raises :class:`FaceNotFoundError` when no
    detection frame has a face, ``ValueError`` for malformed input.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected non-empty (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    cropper = FaceCropper(fps, **cropper_kwargs)
    crops = np.concatenate(list(cropper.crops(lambda: iter(frames))))
    return crops, cropper.detection_rate, cropper.box_array()


def open_video_crops(path: str | Path, **cropper_kwargs) -> tuple[float, FaceCropper, Iterator[np.ndarray]]:
    """Stream a video file through a :class:`FaceCropper`: ``(fps, cropper, crop blocks)``.

    Decoding is :func:`pipeline.video.iter_video` (raises its ``VideoError`` for an unreadable file,
    here or while iterating), run in a helper thread up to ``PREFETCH_FRAMES`` (32) frames ahead of
    the cropper (:func:`pipeline.video.prefetch`), so the decoder keeps working while a block of
    faces is cut. Memory stays a few seconds of full frames whatever the length.
    """
    from pipeline.video import iter_video, prefetch

    fps, _ = iter_video(path)
    cropper = FaceCropper(fps, **cropper_kwargs)
    return (
        fps,
        cropper,
        cropper.crops(lambda: prefetch(iter_video(path, yuv=True)[1], PREFETCH_FRAMES, name="decode")),
    )
