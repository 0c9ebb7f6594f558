"""Study names -> the runs they train and the comparisons they judge (pure: nothing is read or written).

A study is one or more *parts* (``all`` is every part); a part is a list of *conditions* (a row of the
paper's table: a label, the config overrides of the run that trains it and which of that run's models
is the row: ``student`` or ``baseline``, the supervised-only student) and a list of *comparisons*
(condition A against condition B, judged on paired per-seed MAE differences, :mod:`train.study.stats`).

Runs are named from what they change (:func:`run_name`), not from the study: two conditions whose
overrides resolve to the same config are trained once (e.g. ``ablations``' ``full`` and ``methods``'
``rpm-distill``, or ``labels``' fraction 1.0 when the base config already has labeled_frac 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

STUDIES = ("methods", "labels", "ablations", "shift", "all")

# Study sizing, on top of the preset of the same name (``--config`` keys override these, the study's own
# overrides override both). ``paper``: the paper preset unchanged (5 epochs, T 256, the full teacher).
# ``cpu``: 2 epochs x 50 steps of batch 4 at T 128, 72 px, a meta step every 2 steps. The trainer counts
# steps globally over epochs (``step % meta_interval`` with ``step`` running on across epochs), so a
# distillation run takes 100 steps and 100 / 2 = 50 meta steps, the floor. Why these numbers
# (measured 2026-11-30 on the 2-core machine, synthetic 12-subject EquiPleth, labelled fraction 1.0):
# - the student needs about 100 steps before it learns anything: a supervised FactorizePhys reached val
#   L_sup 1.7 after 100 steps and -0.7 after 200 (test MAE 1.4 bpm), from 8.2 after 50; fewer steps would
#   compare students that are all still at chance;
# - a plain step costs about 1.2-1.4 s and a finite-difference meta step about 2.9 plain steps, so a
#   distillation run costs about 100 x 1.3 + 50 x 3.8 = 320 s; 200 steps (or a meta step every step) would
#   push ``methods`` x 3 seeds past the 90 minutes the issue allows (about 23 minutes per seed here:
#   teacher, rpm-distill + its supervised baseline, three KD runs, fusion, and scoring each run);
# - 30 teacher epochs: the cpu preset's, trained once per (seed, labelled fraction) and shared by every
#   run of that seed through the teacher cache.
STUDY_SIZES: dict[str, dict] = {
    "cpu": dict(epochs=2, max_steps_per_epoch=50, meta_interval=2, teacher_epochs=30),
    "paper": {},
}
MIN_META_STEPS = 50  # the floor on policy updates per distillation run

# Methods left out at cpu size unless ``--methods`` names them. PhysFormer has 7,380,865 parameters at 128x128
# input: one training step (forward + backward + Adam) at batch 4, T 128 took 81-119 s on this 2-core machine
# (measured 2026-11-30 with 2 threads while other jobs shared the cores, so perhaps a third of that alone),
# against ~2.5 s for FactorizePhys: 60 steps x 3 seeds would take hours, far past the cpu study's 90 minutes.
CPU_EXCLUDED = ("physformer",)

LABEL_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
SHIFT_PROBS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Ablation label -> the TrainConfig switch it turns off.
ABLATIONS = {
    "no-peak": "peak",
    "no-background": "background",
    "no-morphology": "morphology",
    "no-weights": "weights",
    "no-gate": "gate",
    "no-policy": "policy",
    "no-bilevel": "bilevel",
}
KD_METHODS = ("output-kd", "fitnets", "dml")


@dataclass(frozen=True)
class Condition:
    """One row of a study table: ``kind`` (student or baseline) of the run trained with ``overrides``."""

    label: str
    overrides: tuple[tuple[str, object], ...]  # sorted (key, value) pairs of TrainConfig fields
    kind: str = "student"

    @property
    def config(self) -> dict:
        return dict(self.overrides)


@dataclass(frozen=True)
class Comparison:
    """Condition ``a`` against condition ``b`` (difference a - b); ``what`` says which claim it tests."""

    a: str
    b: str
    what: str


@dataclass
class Part:
    """One study table: its conditions in row order and its comparisons."""

    name: str
    title: str
    conditions: list[Condition]
    comparisons: list[Comparison]
    axis: str | None = None  # a column the table is laid out by (labels: fraction; shift: probability)
    extra: dict = field(default_factory=dict)


def _c(label: str, kind: str = "student", **overrides) -> Condition:
    return Condition(label, tuple(sorted(overrides.items())), kind)


def _methods() -> Part:
    conds = [
        _c("rpm-distill", method="rpm-distill", baseline=True),
        _c("supervised", "baseline", method="rpm-distill", baseline=True),
        *[_c(m, method=m, baseline=False) for m in KD_METHODS],
        _c("fusion", method="fusion"),
        _c("physformer", method="physformer"),
    ]
    comps = [
        Comparison(c.label, "supervised", "distillation / the method beats supervised-only")
        for c in conds
        if c.label != "supervised"
    ]
    comps += [
        Comparison("rpm-distill", m, "spectral distillation beats this KD baseline") for m in KD_METHODS
    ]
    return Part("methods", "Table 1: methods", conds, comps)


def _labels() -> Part:
    conds, comps = [], []
    for f in LABEL_FRACTIONS:
        conds.append(_c(f"distilled-{f:g}", method="rpm-distill", labeled_frac=f, baseline=True))
        conds.append(_c(f"supervised-{f:g}", "baseline", method="rpm-distill", labeled_frac=f, baseline=True))
    ref = f"supervised-{LABEL_FRACTIONS[-1]:g}"
    for f in LABEL_FRACTIONS:
        comps.append(Comparison(f"distilled-{f:g}", ref, f"{f:.0%} labels + distillation vs all labels"))
        if f"supervised-{f:g}" != ref:
            comps.append(
                Comparison(f"supervised-{f:g}", ref, f"{f:.0%} labels, supervised only, vs all labels")
            )
        comps.append(
            Comparison(f"distilled-{f:g}", f"supervised-{f:g}", f"distillation helps at {f:.0%} labels")
        )
    return Part("labels", "Table 2: labelled fraction", conds, comps, axis="labeled_frac")


def _ablations() -> Part:
    conds = [_c("full", method="rpm-distill", baseline=True)]
    conds += [
        _c(label, method="rpm-distill", baseline=False, **{key: False}) for label, key in ABLATIONS.items()
    ]
    comps = [Comparison(label, "full", f"turning {key} off hurts") for label, key in ABLATIONS.items()]
    return Part("ablations", "Table 4: ablations", conds, comps)


def _shift() -> Part:
    conds, comps = [], []
    for p in SHIFT_PROBS:
        conds.append(_c(f"full-p{p:g}", method="rpm-distill", shift_prob=p, baseline=False))
        conds.append(_c(f"no-gate-p{p:g}", method="rpm-distill", shift_prob=p, gate=False, baseline=False))
        comps.append(
            Comparison(f"no-gate-p{p:g}", f"full-p{p:g}", f"the gate protects at shift probability {p:g}")
        )
    return Part("shift", "Table 5: sync-shift probability", conds, comps, axis="shift_prob")


PARTS = {"methods": _methods, "labels": _labels, "ablations": _ablations, "shift": _shift}


def study_parts(name: str) -> list[Part]:
    """The parts (tables) of study ``name`` (one of :data:`STUDIES`); ``all`` is every part in order."""
    if name == "all":
        return [make() for make in PARTS.values()]
    return [PARTS[name]()]


def condition_labels(name: str) -> list[str]:
    """Every condition label of study ``name``, in table order, without repeats."""
    return list(dict.fromkeys(c.label for p in study_parts(name) for c in p.conditions))


# Name tags of the overrides that differ from the base config, in this order.
_TAG_ORDER = ("method", *ABLATIONS.values(), "labeled_frac", "shift_prob")


def run_tag(key: str, value) -> str:
    """The run-name fragment of one override: ``no-gate``, ``frac0.4``, ``shift0.2``, a method name."""
    if key == "method":
        return str(value)
    if key == "labeled_frac":
        return f"frac{value:g}"
    if key == "shift_prob":
        return f"shift{value:g}"
    return key if value else f"no-{key}"


def run_name(method: str, changed: dict, seed: int) -> str:
    """``study-<method>[-<tag>...]-s<seed>``: the tags name the overrides in ``changed`` (the ones that
    differ from the base config), in a fixed order, so equal configs get equal names."""
    tags = [run_tag(k, changed[k]) for k in _TAG_ORDER if k in changed and k != "method"]
    return "-".join(["study", method, *tags, f"s{seed}"])
