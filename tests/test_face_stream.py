"""The streaming face cropper (pipeline.face.FaceCropper) against a scripted detector: exact boxes,
bounded memory, faces missing at the start and in the middle. MTCNN itself is exercised in
test_predict / test_physdrive; here a stand-in with known answers makes the box arithmetic exact."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from pipeline.face import FaceCropper, FaceNotFoundError, square_crop_boxes

H, W, FPS = 60, 80, 10.0  # k = 10 frames between detections


class ScriptedDetector:
    """Looks up the frame index written into pixel (0, 0) and returns the scripted box (or none)."""

    def __init__(self, box_of):
        self.box_of = box_of

    def detect(self, images):
        out = []
        for im in images:
            box = self.box_of(int(im[0, 0, 0]) + 256 * int(im[0, 0, 1]))
            out.append(None if box is None else np.asarray([box], dtype=np.float32))
        return np.array(out, dtype=object), None


def frames_of(n: int) -> np.ndarray:
    frames = np.zeros((n, H, W, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(n) % 256
    frames[:, 0, 0, 1] = np.arange(n) // 256
    frames[:, 5:, 5:] = 120
    return frames


def moving_box(i: int):
    x = 20.0 + 0.3 * i + (3.0 if (i // 10) % 2 else 0.0)  # jitter between keyframes
    return (x, 15.0, x + 20.0, 40.0)


def expected_boxes(n: int, box_of, k: int = 10) -> np.ndarray:
    """The recipe written out in one piece: smooth (3-tap, ends repeated), interpolate, enlarge."""
    keys = sorted(set(range(0, n, k)) | {n - 1})
    found = [(i, box_of(i)) for i in keys if box_of(i) is not None]
    key = np.array([i for i, _ in found], float)
    b = np.array([b for _, b in found], float)
    cs = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    padded = np.concatenate([cs[:1], cs, cs[-1:]])
    smooth = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
    per = np.stack([np.interp(np.arange(n), key, smooth[:, d]) for d in range(4)], 1)
    corners = np.stack(
        [
            per[:, 0] - per[:, 2] / 2,
            per[:, 1] - per[:, 3] / 2,
            per[:, 0] + per[:, 2] / 2,
            per[:, 1] + per[:, 3] / 2,
        ],
        1,
    )
    return square_crop_boxes(corners.astype(np.float32), H, W)


class Counting:
    """A re-openable frame source that records the most decoded frames alive at once."""

    def __init__(self, frames):
        self.frames, self.opened, self.alive, self.peak = frames, 0, 0, 0

    def _freed(self):
        self.alive -= 1

    def __call__(self):
        self.opened += 1
        for f in self.frames:
            frame = f.copy()  # a fresh array per frame, as a decoder hands out
            self.alive += 1
            self.peak = max(self.peak, self.alive)
            weakref.finalize(frame, self._freed)
            yield frame


def run(box_of, n, **kw):
    source = Counting(frames_of(n))
    kw.setdefault("roi_side", None)  # the scripted detector reads the frame index at pixel (0, 0)
    kw.setdefault("track", False)  # and has no O-Net to track with
    cropper = FaceCropper(FPS, mtcnn=ScriptedDetector(box_of), **kw)
    emitted = 0
    for block in cropper.crops(source):
        assert block.shape[1:] == (128, 128, 3) and block.dtype == np.uint8
        emitted += len(block)
    assert emitted == n == cropper.n_frames
    return cropper, source, source.peak


def test_boxes_are_the_smoothed_interpolated_detections():
    n = 95  # keyframes 0, 10, ..., 90 and the last frame, 94
    cropper, source, lag = run(moving_box, n)
    assert np.allclose(cropper.box_array(), expected_boxes(n, moving_box), atol=1e-4)
    assert cropper.detection_rate == 1.0 and cropper.n_keys == 11 and source.opened == 1
    # frames held: two keyframes ahead and the detection in flight, not all 95
    assert cropper.in_flight == 1 and lag <= (2 + 1) * 10 + 2


def test_detections_in_flight_change_memory_not_boxes():
    one, _, lag_one = run(moving_box, 95)
    two, _, lag_two = run(moving_box, 95, in_flight=2)
    assert np.array_equal(one.box_array(), two.box_array())
    assert lag_one <= 3 * 10 + 2 < lag_two


def test_missed_keyframes_are_skipped_and_counted():
    def box_of(i):
        return None if i in (30, 40) else moving_box(i)

    cropper, _, _ = run(box_of, 95)
    assert cropper.detection_rate == pytest.approx(9 / 11)
    assert np.allclose(cropper.box_array(), expected_boxes(95, box_of), atol=1e-4)


def test_memory_stays_bounded_when_the_face_is_gone_for_long():
    def box_of(i):
        return moving_box(i) if i < 50 or i >= 250 else None  # 20 s without a face

    cropper, source, lag = run(box_of, 400)
    assert lag <= cropper.max_pending + 1 and cropper.max_pending == 3 * 10 + 20
    boxes, expected = cropper.box_array(), expected_boxes(400, box_of)
    assert np.allclose(boxes[:30], expected[:30], atol=1e-4)  # exact until the face is lost
    gap = boxes[60:190]
    assert np.allclose(gap, gap[0])  # the overflow holds the last box, then glides to the new face
    assert np.all(np.diff(boxes[190:250, 0]) >= -1e-4) and boxes[249, 0] > gap[0, 0] + 10
    assert np.allclose(boxes[260:], expected[260:], atol=1e-4)  # and is exact again once it is back
    assert cropper.detection_rate == pytest.approx(
        sum(box_of(i) is not None for i in [*range(0, 400, 10), 399]) / 41
    )


def test_a_late_first_face_gets_the_lead_in_decoded_again():
    def box_of(i):
        return moving_box(i) if i >= 120 else None  # 12 s before the first face

    cropper, source, lag = run(box_of, 200)
    assert source.opened == 2 and lag <= cropper.max_pending + 10 + 1  # + one re-read block of k frames
    boxes = cropper.box_array()
    assert np.allclose(boxes, expected_boxes(200, box_of), atol=1e-4)  # the lead-in holds the first box
    assert cropper.detection_rate == pytest.approx(9 / 21)  # 120, 130, ..., 190 and 199


def test_no_face_anywhere_is_an_error_not_a_full_frame():
    with pytest.raises(FaceNotFoundError, match="no face found in any of the 6 detection frames"):
        run(lambda i: None, 50)


# -- searching near the previous face first (roi_side) ---------------------------------------------


class RectangleDetector:
    """Finds the one saturated-blue rectangle in whatever image it is given (a whole frame or a
    region of it) and counts the pixels it looked at: a detector whose answer is exact, so a region
    search and a whole-frame search must agree to the last bit."""

    def __init__(self):
        self.pixels = 0

    def detect(self, images):
        out = []
        for im in np.asarray(images):
            self.pixels += im.shape[0] * im.shape[1]
            rows, cols = np.nonzero(im[..., 2] == 255)
            ok = rows.size > 0
            box = [cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0] if ok else None
            out.append(np.asarray([box], np.float32) if ok else None)
        return np.array(out, dtype=object), None


def rectangle_frames(centres, size=(240, 320), side=24) -> np.ndarray:
    frames = np.full((len(centres), *size, 3), 90, np.uint8)
    for f, (cx, cy) in zip(frames, centres, strict=True):
        f[max(0, cy - side // 2) : cy + side // 2, max(0, cx - side // 2) : cx + side // 2] = (200, 60, 255)
    return frames


def crop_both_ways(frames):
    results = []
    for roi_side in (2.5, None):
        detector = RectangleDetector()
        # two detections in flight: the hint is two keyframes old (the motions below are sized for it)
        cropper = FaceCropper(FPS, mtcnn=detector, roi_side=roi_side, in_flight=2, track=False)
        crops = np.concatenate(list(cropper.crops(lambda: iter(frames))))
        results.append((cropper, crops, detector.pixels))
    return results


@pytest.mark.parametrize(
    "motion",
    [
        "drift",  # slow motion: every keyframe after the first two is found in the region
        "jump",  # the face jumps across the frame: the region misses, the whole frame finds it
        "edge",  # the face moves fast enough to cross the region's edge: a cut box is not accepted
    ],
)
def test_region_search_gives_the_whole_frame_answer(motion):
    n = 120  # keyframes 0, 10, ..., 110 and 119
    i = np.arange(n)
    # the hint is two keyframes (20 frames) old; the region is 60 px wide around a 24 px face
    if motion == "drift":
        cx = 60 + i // 2  # 10 px per hint: inside the region
    elif motion == "jump":
        cx = np.where(i < 60, 60, 260)
    else:
        cx = 60 + i  # 20 px per hint: the face sticks out of the region's edge
    (roi, roi_crops, roi_px), (full, full_crops, full_px) = crop_both_ways(
        rectangle_frames([(int(x), 120) for x in cx])
    )
    assert np.array_equal(roi.box_array(), full.box_array()) and np.array_equal(roi_crops, full_crops)
    assert roi.detection_rate == full.detection_rate == 1.0 and full.n_roi == 0
    if motion == "drift":
        assert roi.n_roi == roi.n_keys - 2 and roi_px < 0.2 * full_px  # the first two have no hint
    elif motion == "jump":
        assert roi.n_roi == roi.n_keys - 4  # no hint twice; the two keyframes after the jump miss
    else:
        assert roi.n_roi < roi.n_keys - 2  # some region answers were cut and thrown away
