"""pipeline.video.prefetch: decoding in a helper thread ahead of the consumer, in order, with errors
passed on, bounded look-ahead, and a clean stop when the consumer quits early."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.video import VideoError, prefetch


class Source:
    """A generator that records how far it was pulled and which thread closed it."""

    def __init__(self, n: int, fail_at: int | None = None):
        self.n, self.fail_at, self.produced, self.closed_by = n, fail_at, 0, None

    def __iter__(self):
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise VideoError(f"clip.mp4: corrupt packet at frame {i}")
                self.produced += 1
                yield i
        finally:
            self.closed_by = threading.current_thread().name


def test_items_come_in_order_and_complete():
    assert list(prefetch(iter(Source(500)), 8)) == list(range(500))


def test_an_error_comes_after_the_items_before_it():
    got = []
    with pytest.raises(VideoError, match="clip.mp4: corrupt packet at frame 7"):
        for item in prefetch(iter(Source(20, fail_at=7)), 4):
            got.append(item)
    assert got == list(range(7))


def test_look_ahead_is_bounded_and_an_early_stop_closes_the_source():
    source = Source(10_000)
    frames = prefetch(iter(source), 4, name="decode")
    assert next(frames) == 0
    time.sleep(0.2)  # the helper runs ahead until the buffer is full
    # one handed out, four buffered, one produced and waiting to be put
    assert source.produced <= 1 + 4 + 1
    frames.close()
    assert source.closed_by == "decode"  # closed by the thread that ran it, before close() returned
    assert not any(t.name == "decode" for t in threading.enumerate())


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        list(prefetch(iter([1]), 0))
