"""A run's training log: ``log.jsonl`` (one record per step and per epoch) and ``log.csv`` (the epochs).

Every record has ``type`` (step | epoch), ``stage`` (teacher | student | baseline) and ``epoch``; step
records add ``step``, the loss terms and ``seconds``; epoch records ``train_loss``, ``val_loss`` and, for
students, ``selected`` and the epoch means of the step terms. NaN values are left out. Only rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from train.config import TrainError


def read_log_records(path: Path) -> list[dict]:
    """The records of an existing ``log.jsonl`` (nothing is written); [] when there is none.

    A last line cut off mid-write (a killed run) is dropped; any other bad line is a :class:`TrainError`.
    """
    if not path.is_file():
        return []
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise TrainError(f"{path}: not a text log ({exc}); the run cannot be resumed") from exc
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise TrainError(f"{path}: line {i + 1} is not JSON") from None
            continue  # the last line of a run killed mid-write (its epoch is redone anyway)
        if not isinstance(record, dict) or not {"type", "stage", "epoch"} <= set(record):
            raise TrainError(f"{path}: line {i + 1} is not a log record (type, stage, epoch)")
        records.append(record)
    return records


class RunLog:
    """``log.jsonl`` and ``log.csv`` of ``out``, started from ``records`` (a resumed run's), rank 0 only.

    Creating it (re)writes both files from ``records``.
    """

    def __init__(self, out: Path, enabled: bool, records: list[dict] | None = None):
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.csv_path = out / "log.csv"
        self.records: list[dict] = list(records or [])
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.enabled:
            return
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        self.write_csv()

    def truncate(self, stage: str, epoch: int) -> None:
        """Forget ``stage``'s records from ``epoch`` on (what a run logged after its last checkpoint)."""
        self.records = [r for r in self.records if not (r["stage"] == stage and r["epoch"] >= epoch)]
        self._rewrite()

    def has_stage(self, stage: str) -> bool:
        return any(r["stage"] == stage for r in self.records)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if record["type"] == "epoch":
            self.write_csv()

    def write_csv(self) -> None:
        rows = [{k: v for k, v in r.items() if k != "type"} for r in self.records if r["type"] == "epoch"]
        keys = sorted({k for row in rows for k in row}, key=lambda k: (k not in ("stage", "epoch"), k))
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)


def stop_if_not_finite(values: dict[str, float], where: str, last_good: Path | None) -> None:
    """Raise :class:`TrainError` when a loss is NaN or infinite, naming the checkpoint that is kept."""
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        kept = (
            f"the last good checkpoint {last_good} is kept" if last_good else "no checkpoint was written yet"
        )
        raise TrainError(f"non-finite loss {bad} at {where}: training stopped; {kept}")
