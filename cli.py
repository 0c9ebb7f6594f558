"""``rpm``: robust remote physiological measurement with radar-to-video spectral distillation.

Stages (each reads and writes under one working directory, see ``pipeline.paths``):
synth -> preprocess -> split -> train -> report.  ``rpm demo`` chains them on CPU-sized data.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.paths import Workdir

app = typer.Typer(
    help="Robust remote physiological measurement: radar teaches a video-only heart-rate model "
    "(RPM-Distill).\n\n"
    "Typical use in an empty folder: rpm synth equipleth; rpm preprocess equipleth; rpm split --seed 3; "
    "rpm train --labeled-frac 0.4; rpm report.  Or just: rpm demo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class Dataset(StrEnum):
    equipleth = "equipleth"


WorkdirOpt = Annotated[
    Path | None,
    typer.Option(
        "--workdir",
        "-w",
        envvar="RPM_WORKDIR",
        help="Working directory holding data/, manifests/, runs/ and reports/ (default: current directory).",
    ),
]


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.command()
def synth(
    dataset: Annotated[Dataset, typer.Argument(help="Dataset layout to write.")],
    out: Annotated[
        Path | None, typer.Option(help="Output root (default: <workdir>/data/raw/<dataset>).")
    ] = None,
    subjects: Annotated[int, typer.Option(min=2, help="Number of subjects.")] = 6,
    trials: Annotated[int, typer.Option(min=1, help="Trials (recordings) per subject.")] = 2,
    seconds: Annotated[
        float, typer.Option(min=6.0, help="Length of each trial in seconds (EquiPleth: 30).")
    ] = 30.0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes byte-identical files.")] = 0,
    crop_size: Annotated[int, typer.Option(help="Side of the written face-crop PNGs in pixels.")] = 128,
    workdir: WorkdirOpt = None,
) -> None:
    """Write a synthetic paired dataset (face video, FMCW radar, PPG) in the real on-disk layout.

    The video pulses with the simulated PPG (reflectance model on skin pixels), and the radar beat
    signal carries breathing plus a heartbeat that lags the PPG by a pulse-transit time. A
    ``synth_truth.json`` sidecar (not part of the real layout) records the true heart rates.
    """
    from pipeline.synth_equipleth import synth_equipleth

    target = out or Workdir.resolve(workdir).raw(dataset.value)
    table = synth_equipleth(
        target, subjects=subjects, trials=trials, seconds=seconds, seed=seed, crop_size=crop_size
    )
    typer.echo(f"wrote {len(table)} trials to {target}")


@app.command()
def preprocess(
    dataset: Annotated[Dataset, typer.Argument(help="Dataset recipe to run.")],
    root: Annotated[
        Path | None,
        typer.Option(
            help="Raw dataset root (default: <workdir>/data/raw/<dataset>). "
            "Point it at the real dataset unchanged."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel dask workers.")] = 2,
    scheduler: Annotated[
        str,
        typer.Option(
            help="dask scheduler: threads, processes, sync, distributed "
            "(local cluster) or a scheduler address tcp://host:port."
        ),
    ] = "threads",
    overwrite: Annotated[bool, typer.Option(help="Redo sessions already complete in the store.")] = False,
    rf_decoder: Annotated[
        str,
        typer.Option(
            help="rf.pkl decoder: bytecount (keeps radar/video alignment "
            "through packet loss) or organizer (the reference code's)."
        ),
    ] = "bytecount",
    workdir: WorkdirOpt = None,
) -> None:
    """Decode, align and store every session in a Zarr v3 store, and index them in a manifest.

    Reads <root>; writes data/<dataset>.zarr and manifests/<dataset>_sessions.csv. Sessions that
    cannot be used are listed as failed with the reason; finished sessions are skipped on rerun.
    """
    from pipeline.equipleth import prepare_equipleth

    wd = Workdir.resolve(workdir)
    try:
        manifest = prepare_equipleth(
            root or wd.raw(dataset.value),
            wd.store(dataset.value),
            wd.manifests,
            workers=workers,
            scheduler=scheduler,
            overwrite=overwrite,
            decoder=rf_decoder,
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    ok = int((manifest.status == "ok").sum())
    typer.echo(
        f"{ok}/{len(manifest)} sessions ok -> {wd.store(dataset.value)}; manifest "
        f"{wd.sessions_manifest(dataset.value)}"
    )
    for row in manifest[manifest.status != "ok"].itertuples():
        typer.secho(f"  failed {row.session}: {row.reason}", fg=typer.colors.YELLOW)


@app.command()
def split(
    seed: Annotated[int, typer.Option(help="Seed for the subject-level split.")] = 3,
    dataset: Annotated[Dataset, typer.Option(help="Dataset to split.")] = Dataset.equipleth,
    protocol: Annotated[
        str,
        typer.Option(
            help="Test subjects: auto (fold file if present, else holdout), "
            "fold (demo_fold.pkl test list) or holdout."
        ),
    ] = "auto",
    test_frac: Annotated[
        float, typer.Option(help="Share of subjects held out for test (holdout protocol).")
    ] = 0.2,
    workdir: WorkdirOpt = None,
) -> None:
    """Split subjects into train / val (4:1, seeded) and held-out test.

    Reads manifests/<dataset>_sessions.csv; writes manifests/splits.csv and manifests/splits.json.
    """
    from pipeline.split import SplitError, write_splits

    wd = Workdir.resolve(workdir)
    try:
        _, meta = write_splits(
            wd.sessions_manifest(dataset.value), wd.splits_manifest, wd.splits_meta, seed, protocol, test_frac
        )
    except SplitError as exc:
        _fail(exc)
    subj = meta["subjects"]
    typer.echo(
        f"protocol {meta['protocol']}, seed {seed}: train {subj['train']}, val {subj['val']}, "
        f"test {subj['test']} -> {wd.splits_manifest}"
    )


@app.command()
def train(
    labeled_frac: Annotated[
        float,
        typer.Option(
            help="Fraction of training subjects whose labels are used "
            "(the rest learn from the radar teacher only)."
        ),
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for labelled subjects, init and batch order.")] = 3,
    name: Annotated[str, typer.Option(help="Run name: checkpoints go to runs/<name>/.")] = "default",
    preset: Annotated[str, typer.Option(help="auto (cpu without a GPU, else paper), cpu or paper.")] = "auto",
    epochs: Annotated[int | None, typer.Option(help="Student epochs (preset default).")] = None,
    teacher_epochs: Annotated[int | None, typer.Option(help="RF teacher epochs (preset default).")] = None,
    frames: Annotated[int | None, typer.Option(help="Clip length T in frames (preset default).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (preset default).")] = None,
    max_steps_per_epoch: Annotated[int | None, typer.Option(help="Cap on steps per epoch.")] = None,
    mode: Annotated[str, typer.Option(help="distill (Eq. 1), sup_only or distill_only.")] = "distill",
    policy: Annotated[
        bool, typer.Option(help="Learn gate and weights with the bilevel policy network.")
    ] = True,
    baseline: Annotated[bool, typer.Option(help="Also train the supervised-only student.")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workdir: WorkdirOpt = None,
) -> None:
    """Train the RF teacher, then the video student with spectral distillation (and the baseline).

    Reads manifests/splits.csv and data/<dataset>.zarr; writes runs/<name>/{teacher,student,baseline}.pt,
    config.json and log.csv.
    """
    from train.trainer import TrainError, resolve_config
    from train.trainer import train as run_training

    try:
        cfg = resolve_config(
            dict(
                run_name=name,
                seed=seed,
                labeled_frac=labeled_frac,
                preset=preset,
                epochs=epochs,
                teacher_epochs=teacher_epochs,
                frames=frames,
                batch_size=batch_size,
                max_steps_per_epoch=max_steps_per_epoch,
                mode=mode,
                policy=policy,
                baseline=baseline,
                device=device,
            )
        )
        run_training(cfg, Workdir.resolve(workdir))
    except TrainError as exc:
        _fail(exc)


@app.command()
def report(
    runs: Annotated[list[str] | None, typer.Argument(help="Run names (default: every run in runs/).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workdir: WorkdirOpt = None,
) -> None:
    """Evaluate runs on their held-out test windows: HR MAE, RMSE, STD and Pearson r per method.

    Reads runs/<name>/*.pt, manifests/splits.csv and the store; writes reports/report.md,
    metrics.json, metrics.csv and windows.csv.
    """
    from train.report import ReportError, make_report

    try:
        path = make_report(Workdir.resolve(workdir), runs, device)
    except ReportError as exc:
        _fail(exc)
    typer.echo(path.read_text())
    typer.echo(f"report written to {path}")


@app.command()
def demo(
    subjects: Annotated[int, typer.Option(help="Synthetic subjects.")] = 6,
    trials: Annotated[int, typer.Option(help="Trials per subject.")] = 2,
    seconds: Annotated[float, typer.Option(help="Seconds per trial.")] = 30.0,
    labeled_frac: Annotated[float, typer.Option(help="Labelled fraction of training subjects.")] = 0.4,
    seed: Annotated[int, typer.Option(help="Seed for data, split and training.")] = 3,
    workdir: WorkdirOpt = None,
) -> None:
    """Run every stage end to end on a CPU-sized synthetic EquiPleth dataset and print the report."""
    wd = Workdir.resolve(workdir)
    typer.echo(f"demo in {wd.root}")
    synth(
        Dataset.equipleth,
        out=None,
        subjects=subjects,
        trials=trials,
        seconds=seconds,
        seed=seed,
        crop_size=128,
        workdir=wd.root,
    )
    preprocess(
        Dataset.equipleth,
        root=None,
        workers=2,
        scheduler="threads",
        overwrite=False,
        rf_decoder="bytecount",
        workdir=wd.root,
    )
    split(seed=seed, dataset=Dataset.equipleth, protocol="auto", test_frac=0.2, workdir=wd.root)
    train(
        labeled_frac=labeled_frac,
        seed=seed,
        name="demo",
        preset="cpu",
        epochs=None,
        teacher_epochs=None,
        frames=None,
        batch_size=None,
        max_steps_per_epoch=None,
        mode="distill",
        policy=True,
        baseline=True,
        device="auto",
        workdir=wd.root,
    )
    report(runs=["demo"], device="auto", workdir=wd.root)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
