"""Every key the report reads from what other stages write, in one place.

Each name is the writer's own: a :class:`~train.config.TrainConfig` field (checked here at import, so a
renamed field fails loudly), a constant imported from the writer, or, where the writer builds the key
inline, the literal it writes (``tests/test_report_schema.py`` runs the writers and checks each one).

Sources and their writers:

* ``runs/<name>/config.json``: the resolved TrainConfig fields plus the keys
  ``train.trainer._write_run_config`` adds (:data:`RUN_CONFIG_EXTRA`);
* ``runs/<name>/<kind>.pt``: :func:`train.checkpoint.save_checkpoint` (``config``; students ``policy``);
* ``runs/<name>/log.jsonl``: :class:`train.runlog.RunLog` step records (``type``) with the policy's
  gate and weights (:meth:`train.method.RpmDistill.term`: ``gate``, ``alpha_<component>``) and, on meta
  steps, :data:`META_KEYS` (:func:`train.trainer.meta_step`);
* ``manifests/splits.csv``: ``rpm split`` (:data:`manifests.SPLIT_COLUMNS`);
* ``manifests/<dataset>_sessions.csv``: ``rpm preprocess`` (:data:`manifests.SESSION_COLUMNS`);
* ``data/<dataset>.zarr`` session attributes and arrays: :func:`pipeline.recipes.base.run_session`;
* ``data/raw/<dataset>/synth_truth.json``: ``rpm synth`` (:mod:`pipeline.synth.equipleth`,
  :mod:`pipeline.synth.physdrive`).
"""

from __future__ import annotations

from dataclasses import fields

from manifests import SESSION_COLUMNS, SPLIT_COLUMNS
from pipeline.store import SESSION_ARRAYS
from train.checkpoint import MODEL_KEYS
from train.config import COMPONENTS, TrainConfig

_CONFIG_FIELDS = {f.name for f in fields(TrainConfig)}


def _field(name: str) -> str:
    """``name``, which must be a TrainConfig field (raises at import when the field is renamed)."""
    if name not in _CONFIG_FIELDS:
        raise ImportError(f"train.report.schema: {name!r} is not a TrainConfig field")
    return name


def _among(name: str, written: tuple | list | set, where: str) -> str:
    if name not in written:
        raise ImportError(f"train.report.schema: {where} does not write {name!r}")
    return name


# ------------------------------------------------------------------- runs/<name>/config.json, *.pt

SEED = _field("seed")
DATASET = _field("dataset")
LABELED_FRAC = _field("labeled_frac")
GATE = _field("gate")
METHOD = _field("method")  # a run's training method (names the student row of physformer / fusion runs)
POLICY = _field("policy")
# Keys train.trainer._write_run_config adds to the TrainConfig fields in config.json.
LABELED_SUBJECTS = "labeled_subjects"
DEVICE_RESOLVED = "device_resolved"
WORLD_SIZE = "world_size"
TEACHER_KEY = "teacher_key"
SYNC_SHIFT_PROB = "sync_shift_prob"  # share of training clips whose radar was shifted (splits.json)
RUN_CONFIG_EXTRA = (LABELED_SUBJECTS, DEVICE_RESOLVED, WORLD_SIZE, TEACHER_KEY, SYNC_SHIFT_PROB)

# Config keys that never make two runs different experiments.
NOT_EXPERIMENT = frozenset(
    {
        *map(_field, ("seed", "run_name", "device", "num_workers", "resume", "amp", "teacher_cache")),
        _field("baseline"),  # whether the supervised-only student was also trained: not the student's
        DEVICE_RESOLVED,
        LABELED_SUBJECTS,
        TEACHER_KEY,
        WORLD_SIZE,
    }
)

CONFIG_JSON = "config.json"
CKPT_CONFIG = _among("config", MODEL_KEYS, "train.checkpoint.save_checkpoint")
CKPT_POLICY = "policy"  # the student's spectral policy state dict (None without a policy)

# ------------------------------------------------------------------- runs/<name>/log.jsonl

LOG_FILE = "log.jsonl"
LOG_TYPE = "type"
LOG_STEP = "step"  # the value of LOG_TYPE on per-step records
GATE_KEYS = ("gate", *(f"alpha_{c}" for c in COMPONENTS))  # gate, alpha_peak, alpha_background, ...
# On the step records of meta steps (train.trainer.meta_step): L_sup of the virtual student on the
# validation batch, and the global L2 norm of the policy's meta-gradient.
META_KEYS = ("meta_loss", "meta_grad_norm")

# ------------------------------------------------------------------- manifests

SPLIT_SESSION, SPLIT_DATASET, SPLIT_SUBJECT, SPLIT = (
    _among(c, SPLIT_COLUMNS, "rpm split (splits.csv)") for c in ("session", "dataset", "subject", "split")
)
TEST = "test"  # the value of SPLIT on held-out sessions
MANIFEST_SESSION = _among("session", SESSION_COLUMNS, "rpm preprocess (<dataset>_sessions.csv)")

# ------------------------------------------------------------------- store sessions (rpm preprocess)

STORE_SUBJECT = "subject"
STORE_SKIN_TYPE = "skin_type"
STORE_CONDITIONS = "conditions"  # a dict of the manifest's condition columns
STORE_VIDEO = _among("video", SESSION_ARRAYS, "pipeline.store")
STORE_BVP = _among("bvp", SESSION_ARRAYS, "pipeline.store")
STORE_RADAR = _among("radar", SESSION_ARRAYS, "pipeline.store")  # (T_rf, 2, bins) I/Q (the FFT radar row)
STORE_RADAR_OK = _among("radar_ok", SESSION_ARRAYS, "pipeline.store")
STORE_RADAR_CHANNEL = "radar_channel"  # index of the chest bin on the bins axis
STORE_RADAR_FPS = "radar_fps"
STORE_FPS = "fps"
STORE_RADAR_ATTRS = (STORE_RADAR_CHANNEL, STORE_RADAR_FPS)  # what the FFT radar row needs besides the arrays

# ------------------------------------------------------------------- synth_truth.json (rpm synth)

TRUTH_FILE = "synth_truth.json"  # pipeline.synth.driver.TRUTH_FILE, written by both generators
# Per dataset: the top-level key of the per-session entries, and a store session's name there.
TRUTH_ENTRIES = {"equipleth": "trials", "physdrive": "sessions"}
TRUTH_NAMES = {
    "equipleth": lambda session: session,  # v_<subject>_<trial>
    "physdrive": lambda session: session.replace("_", "/", 1),  # store AFH1_AS is truth AFH1/AS
}
TRUTH_CONDITIONS = "conditions"
TRUTH_CORRUPTIONS = "corruptions"  # list of {kind, start_s, end_s, modality} on the video clock
CORRUPTION_KIND, CORRUPTION_START, CORRUPTION_END, CORRUPTION_MODALITY = (
    "kind",
    "start_s",
    "end_s",
    "modality",
)
RADAR = "radar"  # the value of CORRUPTION_MODALITY on radar corruptions

# ------------------------------------------------------------------- recording conditions

# Condition keys per source (read in this order; a later source wins). Strings are taken as they are,
# booleans as "<key>" / "no <key>"; empty values are skipped.
MANIFEST_CONDITIONS = tuple(
    _among(c, SESSION_COLUMNS, "rpm preprocess (<dataset>_sessions.csv)")
    for c in ("illumination", "motion", "road")
)
STORE_CONDITION_KEYS = ("illumination", "motion", "road")
TRUTH_CONDITION_KEYS = ("illumination", "motion", "talking", "road")  # road: PhysDrive only
