"""``rpm report``: evaluate trained runs on their held-out test sets; write tables, figures and metrics.

For every run in ``runs/`` (or the ones named) the test sessions of ``manifests/splits.csv`` are
evaluated under both windowing protocols of :data:`train.evaluate.PROTOCOLS` (``release``: T-frame
windows at stride 30; ``equipleth``: whole-video prediction, 300-sample windows at stride 128) for

* the run's checkpoints: the distilled student, the supervised-only student and the RF teacher;
* the classical baselines POS, CHROM and GREEN (:mod:`train.classical`) and the training-free FFT radar
  baseline (:mod:`train.radar_fft`, radar at test time) on the same windows.

Runs whose configs differ only by seed (and run name / device / labelled subjects) form a group;
a group's numbers are mean +- std over its seeds. Outputs, under ``reports/``:

* ``report.md``: the paper-shaped tables (methods x datasets; labelled fraction x condition;
  ablations; sync-shift probability x {full, no gate}), gate / weight statistics by condition and by
  radar corruption (when the synthetic truth sidecar says where the radar was corrupted), and
  figures; undefined cells read ``n/a`` with a footnote;
* ``figures/*.png``: Bland-Altman + scatter per method, gate and weights by condition (test windows
  and, when ``runs/<name>/log.jsonl`` has them, training steps), waveforms by skin type, a spectrum;
* ``metrics.json``: per run and per group, per protocol and method (NaN written as null);
* ``metrics.csv``: the same numbers in long form (level, group, run, protocol, method, metric, mean,
  std, n_seeds; undefined values as ``n/a``);
* ``windows.csv``: every window's HR per method, truth, skin type, conditions and corruption flag.

Modules, in the order the report is made:

* :mod:`~train.report.schema`: every key read from what other stages write (config, checkpoints, log,
  manifests, store, truth sidecar), named once;
* :mod:`~train.report.methods`: the registry of method rows;
* :mod:`~train.report.runs`: finding runs; a run's checkpoints, config and training log; the test split;
* :mod:`~train.report.sessions`: a test session's skin type, conditions and radar corruption intervals;
* :mod:`~train.report.windows`: cutting sessions into windows and predicting waveforms;
* :mod:`~train.report.scoring`: one run's windows and metrics under both protocols;
* :mod:`~train.report.groups`: grouping runs into experiments;
* :mod:`~train.report.tables`, :mod:`~train.report.gate`, :mod:`~train.report.figures`: report.md's
  tables, the policy gate section and the figures;
* :mod:`~train.report.outputs`, :mod:`~train.report.make`: metrics files and :func:`make_report`.
* :mod:`~train.report.diagnostics`: a run's teacher against the FFT radar and POS on its *training*
  windows (:func:`~train.report.diagnostics.train_subject_quality`; not part of ``report.md``).
"""

from train.report.gate import gate_difference
from train.report.make import make_report
from train.report.methods import METHODS, REGISTRY, ReportMethod
from train.report.runs import ReportError
from train.report.scoring import RunResult, evaluate_run

__all__ = [
    "METHODS",
    "REGISTRY",
    "ReportError",
    "ReportMethod",
    "RunResult",
    "evaluate_run",
    "gate_difference",
    "make_report",
]
