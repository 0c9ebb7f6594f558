"""Manifest schemas: fixed file names and columns, shared by every stage.

Generated manifests are written to ``<workdir>/manifests/`` (this package's folder when the
working directory is the repository root; the CSV/JSON files there are git-ignored).

``<dataset>_sessions.csv`` (one row per input session, written by ``rpm preprocess``):

=================  ======  ==========================================================
column             type    meaning
=================  ======  ==========================================================
session            str     session name, e.g. ``v_3_1`` (EquiPleth RGB folder name)
dataset            str     ``equipleth``
subject            str     subject id (``3``)
trial              str     trial id (``1``)
status             str     ``ok`` (in the store, verified) or ``failed``
reason             str     why a session failed; empty when ok
skin_type          int     Fitzpatrick type 1-6; -1 when unknown
fold_split         str     split named by ``demo_fold.pkl`` (train/val/test) or empty
n_frames           int     aligned length T stored (video frames = PPG samples)
n_radar_frames     int     radar frames stored (= 4 T at 120 Hz)
radar_bin          int     chosen chest range bin (5..19); -1 when failed
rf_lost_packets    int     sequence numbers missing in ``rf.pkl``
rf_lost_frames     int     radar frames (of the stored 4 T) filled by interpolation
store_group        str     Zarr group path inside the store
=================  ======  ==========================================================

``splits.csv`` (one row per ok session, written by ``rpm split``): ``session``, ``dataset``,
``subject``, ``split`` (train / val / test). ``splits.json`` holds the seed, protocol, the
subject lists and a hash of the sessions manifest it was made from.
"""

from __future__ import annotations

SESSION_COLUMNS = [
    "session",
    "dataset",
    "subject",
    "trial",
    "status",
    "reason",
    "skin_type",
    "fold_split",
    "n_frames",
    "n_radar_frames",
    "radar_bin",
    "rf_lost_packets",
    "rf_lost_frames",
    "store_group",
]
SPLIT_COLUMNS = ["session", "dataset", "subject", "split"]
SPLITS = ("train", "val", "test")
