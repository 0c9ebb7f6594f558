"""Manifest schemas: fixed file names and columns, shared by every stage.

Generated manifests are written to ``<workdir>/manifests/`` (this package's folder when the
working directory is the repository root; the CSV/JSON files there are git-ignored).

``<dataset>_sessions.csv`` (one row per input session, failed ones included, written by
``rpm preprocess``; every recipe writes the same columns, empty where they do not apply):

===================  ======  ==========================================================
column               type    meaning
===================  ======  ==========================================================
session              str     session name: ``v_3_1`` (EquiPleth), ``AFH1_AS`` (PhysDrive),
                             the folder name (folder recipe)
dataset              str     ``equipleth``, ``physdrive`` or ``folder``
subject              str     subject id (``3``, ``AFH1``)
trial                str     trial or session code (``1``, ``AS``)
status               str     ``ok`` (in the store, verified) or ``failed``
reason               str     why a session failed (file and problem); empty when ok
skin_type            int     Fitzpatrick type 1-6; -1 when unknown
fold_split           str     EquiPleth: split named by fold 0 of ``demo_fold.pkl`` or empty
folds                str     EquiPleth: JSON {fold: split} over every fold of ``demo_fold.pkl``
car, sex             str     PhysDrive conditions from the subject code <car><sex><illum><n>
illumination         str     ``noon``, ``dusk``, ``midnight``, ``rainy``
road, motion         str     PhysDrive session code <road><motion>: ``flat``, ``congested``,
                             ``bumpy``; ``stationary``, ``talking``
n_frames             int     aligned length T stored (video frames = BVP samples)
fps                  float   video rate (EquiPleth 30)
n_radar_frames       int     radar frames stored (EquiPleth 4 T at 120 Hz)
radar_fps            float   radar rate (EquiPleth 120, PhysDrive 20)
radar_bin            int     chosen range bin (EquiPleth: chest bin 5..19; PhysDrive: index in
                             the 8-bin crop); -1 when failed
radar_angle_bin      int     PhysDrive: chosen angle bin (0..15); -1 otherwise
radar_coverage       float   share of stored radar frames that are real (``radar_ok``)
radar_snr_db         float   cardiac-band SNR of the chosen bin (``pipeline.quality``)
radar_lag_s          float   video-radar lag from cardiac-band cross-correlation (+ = radar late)
radar_lag_corr       float   its |normalised correlation|
face_detection_rate  float   share of frames with an MTCNN face; NaN for ready-made crops
rf_lost_packets      int     EquiPleth: sequence numbers missing in ``rf.pkl``
rf_lost_frames       int     EquiPleth: radar frames (of the stored 4 T) filled by interpolation
rf_discontinuities   int     EquiPleth: arrival positions where the packet number jumps
repairs              str     what was repaired, ``;``-separated (interpolated radar frames,
                             PPG or BVP samples, radar gaps, skipped radar clips, trimmed
                             frames, an unknown or invalid skin type), and plausibility notes
                             (radar coverage < 50 %, a label with little power in the
                             heart-rate band: ``pipeline.quality``); empty when nothing
store_group          str     Zarr group path inside the store
===================  ======  ==========================================================

``splits.csv`` (one row per ok session, written by ``rpm split``): ``session``, ``dataset``,
``subject``, ``split`` (train / val / test). ``splits.json`` holds the seed, protocol, the
subject lists, ``shift`` (the sync-shift schedule ``prob``, ``frames``, ``seed`` that ``rpm train``
applies, and the counts over ``clips.csv``'s training clips), the deprecated ``labeled_frac`` /
``labeled_subjects`` preview, and the path and hash of every sessions manifest it was made from
(``sessions_manifest``/``sessions_sha256`` name the source dataset's).

``clips.csv`` (one row per window at ``rpm split --frames/--stride``, written by ``rpm split``; cut
by ``pipeline.split.session_windows``, the function training and the report cut theirs with, so a
run at the same length and stride uses exactly these windows and shifts; training does not read it):

===============  ======  ==============================================================
column           type    meaning
===============  ======  ==============================================================
clip             int     row number (0..)
session          str     session (store group)
dataset          str     dataset (which store to read)
subject          str     subject
split            str     train / val / test
start            int     first video frame
frames           int     window length T in video frames (default 256)
labeled          bool    preview: the subject is in ``rpm split --labeled-frac``'s draw
                         (deprecated; ``rpm train --labeled-frac`` decides)
shift_frames     int     radar window shifted forward by this many video frames (0 = none)
radar_start      int     first radar frame: round((start + shift_frames) * radar_fps / fps)
radar_frames     int     radar frames covering the window: round(frames * radar_fps / fps)
radar_ok_frac    float   share of real (not lost / not missing) radar frames in that window
===============  ======  ==============================================================
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
    "folds",
    "car",
    "sex",
    "illumination",
    "road",
    "motion",
    "n_frames",
    "fps",
    "n_radar_frames",
    "radar_fps",
    "radar_bin",
    "radar_angle_bin",
    "radar_coverage",
    "radar_snr_db",
    "radar_lag_s",
    "radar_lag_corr",
    "face_detection_rate",
    "rf_lost_packets",
    "rf_lost_frames",
    "rf_discontinuities",
    "repairs",
    "store_group",
]
_STR_COLUMNS = {
    "session", "dataset", "subject", "trial", "status", "reason", "fold_split", "folds",
    "car", "sex", "illumination", "road", "motion", "repairs", "store_group",
}  # fmt: skip
_INT_COLUMNS = {
    "skin_type", "n_frames", "n_radar_frames", "radar_bin", "radar_angle_bin",
    "rf_lost_packets", "rf_lost_frames", "rf_discontinuities",
}  # fmt: skip
CLIP_COLUMNS = [
    "clip",
    "session",
    "dataset",
    "subject",
    "split",
    "start",
    "frames",
    "labeled",
    "shift_frames",
    "radar_start",
    "radar_frames",
    "radar_ok_frac",
]


def empty_session_row() -> dict:
    """A sessions-manifest row with every column at its 'not applicable' value."""
    row = {}
    for c in SESSION_COLUMNS:
        if c in _STR_COLUMNS:
            row[c] = ""
        elif c in _INT_COLUMNS:
            row[c] = -1 if c in ("skin_type", "radar_bin", "radar_angle_bin") else 0
        else:
            row[c] = float("nan")
    return row


def read_sessions(path):
    """Read a sessions manifest with string identity columns (``subject`` ``007`` stays ``007``)."""
    import pandas as pd

    numeric = {c: ["", "nan", "NaN"] for c in SESSION_COLUMNS if c not in _STR_COLUMNS}
    return pd.read_csv(path, dtype={c: str for c in _STR_COLUMNS}, keep_default_na=False, na_values=numeric)


SPLIT_COLUMNS = ["session", "dataset", "subject", "split"]
SPLITS = ("train", "val", "test")
