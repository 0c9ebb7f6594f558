"""The session writer: streamed shards read back exactly, and the direct shard encoder writes the
same bytes zarr's own encoder writes for the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.store import SHARD_FRAMES, SessionWriter, StoreError


def frames_with_black_chunks(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 255, (n, 128, 128, 3), dtype=np.uint8)
    video[:, :64] = 100  # compressible half
    video[64:96] = 0  # one all-black chunk: zarr does not store it
    return video


def write(path, video, direct: bool, blocks=(7, 300, 1000)):
    writer = SessionWriter(path, "s")
    writer.direct_shards = direct
    pos, pieces = 0, []
    for size in blocks:
        pieces.append(video[pos : pos + size])
        pos += size
    pieces.append(video[pos:])
    assert writer.write_video(p for p in pieces if len(p)) == len(video)
    writer.finish(np.zeros(len(video), np.float32), np.zeros((4, 2, 5)), np.ones(4, bool), {"fps": 30.0})


@pytest.mark.parametrize("n", [40, SHARD_FRAMES, 2 * SHARD_FRAMES + 88])
def test_direct_shards_equal_zarr_encoding_byte_for_byte(tmp_path, n):
    video = frames_with_black_chunks(n)
    write(tmp_path / "direct.zarr", video, direct=True)
    write(tmp_path / "zarr.zarr", video, direct=False)
    shards = sorted(
        p.relative_to(tmp_path / "zarr.zarr") for p in (tmp_path / "zarr.zarr").rglob("c/*/0/0/0")
    )
    assert len(shards) == -(-n // SHARD_FRAMES)
    for rel in shards:
        assert (tmp_path / "direct.zarr" / rel).read_bytes() == (tmp_path / "zarr.zarr" / rel).read_bytes()
    g = zarr.open_group(str(tmp_path / "direct.zarr" / "s"), mode="r")
    assert g.attrs["complete"] and g["video"].shards == (SHARD_FRAMES, 128, 128, 3)
    assert g["video"].chunks == (32, 128, 128, 3)
    assert np.array_equal(g["video"][...], video)


def test_blocks_of_another_frame_size_are_refused(tmp_path):
    writer = SessionWriter(tmp_path / "s.zarr", "s")
    with pytest.raises(
        StoreError, match=r"s: video block is \(2, 64, 64, 3\) uint8, expected \(n, 128, 128, 3\)"
    ):
        writer.write_video([np.zeros((3, 128, 128, 3), np.uint8), np.zeros((2, 64, 64, 3), np.uint8)])
    writer.close(wait_errors=False)
