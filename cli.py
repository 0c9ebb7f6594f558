"""``rpm``: robust remote physiological measurement with radar-to-video spectral distillation.

Stages (each reads and writes under one working directory, see ``pipeline.paths``):
synth -> preprocess -> split -> train -> report.  ``rpm demo`` chains them on CPU-sized data.
"""

from __future__ import annotations

from pipeline.threads import configure_process_threads

# Before anything imports torch: OpenMP reads its thread count and wait policy once, when it loads.
configure_process_threads()

import sys  # noqa: E402
from enum import StrEnum  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

from pipeline.paths import Workdir  # noqa: E402

app = typer.Typer(
    help="Robust remote physiological measurement: radar teaches a video-only heart-rate model "
    "(RPM-Distill).\n\n"
    "Typical use in an empty folder: rpm synth equipleth; rpm preprocess equipleth; rpm split --seed 3; "
    "rpm train --labeled-frac 0.4; rpm report; rpm predict VIDEO.  Or just: rpm demo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class Dataset(StrEnum):
    equipleth = "equipleth"
    physdrive = "physdrive"
    folder = "folder"


class SynthLayout(StrEnum):
    """The layouts ``rpm synth`` writes (the folder layout is for users' own recordings)."""

    equipleth = "equipleth"
    physdrive = "physdrive"


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
    dataset: Annotated[SynthLayout, typer.Argument(help="Dataset layout to write.")],
    out: Annotated[
        Path | None, typer.Option(help="Output root (default: <workdir>/data/raw/<dataset>).")
    ] = None,
    subjects: Annotated[
        int | None, typer.Option(min=1, help="Number of subjects (default: from --size).")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="EquiPleth: trials per subject (default: from --size).")
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(min=2.0, help="Length of each trial / session in seconds (default: from --size)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes byte-identical files.")] = 0,
    crop_size: Annotated[
        int, typer.Option(help="EquiPleth: side of the written face-crop PNGs in pixels.")
    ] = 128,
    size: Annotated[
        str,
        typer.Option(
            help="small (demo and tests: EquiPleth 6 x 2 x 30 s, PhysDrive 2 x 2 x 20 s) or full "
            "(EquiPleth 91 x 6 x 30 s, PhysDrive 48 x 6 x 300 s); explicit counts override it."
        ),
    ] = "small",
    sessions: Annotated[
        int | None,
        typer.Option(
            min=1, max=6, help="PhysDrive: sessions per subject, of AS AT BS BT CS CT (default: --size)."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Write into a non-empty output folder that rpm synth did not write (its files with "
            "synth's names are replaced)."
        ),
    ] = False,
    difficulty: Annotated[
        str,
        typer.Option(
            help="realistic (the real datasets' confounders: camera AE/AWB steps, head motion with the "
            "heartbeat and breathing, contact-PPG label imperfections, asymmetric breathing, sway and "
            "multipath in the radar, ...) or easy (none of them: a clean world for tests)."
        ),
    ] = "realistic",
    workdir: WorkdirOpt = None,
) -> None:
    """Write a synthetic paired dataset (face video, radar, PPG) in the real on-disk layout.

    Physically grounded: a reflectance video model (skin type, illumination, head motion, talking,
    specular, sensor noise, 8-bit), radar whose chest phase carries breathing and a heartbeat that
    shares the PPG's rate but not its shape, and sometimes-present corruption (body motion,
    interference, occlusion, packet loss; PhysDrive: vehicle vibration, radar-video offsets up to
    1 s). A ``synth_truth.json`` sidecar (not part of the real layout) records the ground truth.
    The output folder must be new, empty or synth's own (marked by ``.rpm_synth.json``) unless --force.
    """
    from pipeline.lock import LockedError, hold_lock
    from pipeline.paths import OutputPathError, check_output_dir, lock_beside
    from pipeline.synth_target import SynthTargetError

    if size not in ("small", "full"):
        _fail(ValueError(f"--size must be small or full, got {size!r}"))
    if difficulty not in ("easy", "realistic"):
        _fail(ValueError(f"--difficulty must be easy or realistic, got {difficulty!r}"))
    target = out or Workdir.resolve(workdir).raw(dataset.value)
    try:
        check_output_dir(target, "--out")
        with hold_lock(lock_beside(target), f"synth folder {target}"):
            if dataset == SynthLayout.equipleth:
                from pipeline.synth_equipleth import synth_equipleth

                table = synth_equipleth(
                    target,
                    subjects=subjects,
                    trials=trials,
                    seconds=seconds,
                    seed=seed,
                    crop_size=crop_size,
                    size=size,
                    force=force,
                    difficulty=difficulty,
                )
                typer.echo(f"wrote {len(table)} trials to {target}")
            else:
                from pipeline.synth_physdrive import synth_physdrive

                table = synth_physdrive(
                    target,
                    subjects=subjects,
                    sessions=sessions,
                    seconds=seconds,
                    seed=seed,
                    size=size,
                    force=force,
                    difficulty=difficulty,
                )
                typer.echo(f"wrote {len(table)} sessions to {target}")
    except (SynthTargetError, OutputPathError, LockedError) as exc:
        _fail(exc)


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
            help="EquiPleth rf.pkl decoder: bytecount (keeps radar/video alignment "
            "through packet loss) or organizer (the reference code's)."
        ),
    ] = "bytecount",
    min_face_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="physdrive/folder: a session whose MTCNN detection rate is below this is marked "
            "failed and not stored.",
        ),
    ] = 0.5,
    min_face_frac: Annotated[
        float,
        typer.Option(
            min=0.02,
            max=1.0,
            help="physdrive/folder: the smallest face MTCNN looks for, as a share of the frame's "
            "longer side; larger is faster (0.15 cuts detection time by about 40 %).",
        ),
    ] = 0.1,
    store: Annotated[
        str | None,
        typer.Option(
            help="Store path or any fsspec URL zarr accepts, e.g. s3://bucket/x.zarr "
            "(default: data/<dataset>.zarr). It must be new, an empty folder or a store rpm made."
        ),
    ] = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Decode, align and store every session in a Zarr v3 store, and index them in a manifest.

    Reads <root>; writes data/<dataset>.zarr and manifests/<dataset>_sessions.csv. Sessions that
    cannot be used are listed as failed with the reason; finished sessions are skipped on rerun.
    One run per store at a time: a second one stops at once, naming the PID holding <store>.lock.
    Recipes: equipleth (real EquiPleth layout), physdrive (public PhysDrive layout), folder (your
    own recordings: see README "Own recordings").
    """
    from pipeline.equipleth import prepare_equipleth
    from pipeline.folder import prepare_folder
    from pipeline.lock import LockedError
    from pipeline.physdrive import prepare_physdrive
    from pipeline.store import StoreError

    wd = Workdir.resolve(workdir)
    src, dst = root or wd.raw(dataset.value), store or wd.store(dataset.value)
    common = dict(workers=workers, scheduler=scheduler, overwrite=overwrite)
    try:
        if dataset is Dataset.equipleth:
            manifest = prepare_equipleth(src, dst, wd.manifests, decoder=rf_decoder, **common)
        elif dataset is Dataset.physdrive:
            manifest = prepare_physdrive(
                src, dst, wd.manifests, min_face_rate=min_face_rate, min_face_frac=min_face_frac, **common
            )
        else:
            manifest = prepare_folder(
                src, dst, wd.manifests, min_face_rate=min_face_rate, min_face_frac=min_face_frac, **common
            )
    except (FileNotFoundError, ValueError, StoreError, LockedError) as exc:
        _fail(exc)
    ok = int((manifest.status == "ok").sum())
    typer.echo(f"{ok}/{len(manifest)} sessions ok -> {dst}; manifest {wd.sessions_manifest(dataset.value)}")
    for row in manifest[manifest.status != "ok"].itertuples():
        typer.secho(f"  failed {row.session}: {row.reason}", fg=typer.colors.YELLOW)


@app.command()
def split(
    seed: Annotated[int, typer.Option(help="Seed for the subject-level split.")] = 3,
    dataset: Annotated[Dataset, typer.Option(help="Dataset to split (the source for --protocol cross).")] = (
        Dataset.equipleth
    ),
    protocol: Annotated[
        str,
        typer.Option(
            help="Test subjects: auto (fold file if present, else holdout), "
            "fold (demo_fold.pkl test list), holdout, or cross (train/val on --dataset, "
            "all of --target is test)."
        ),
    ] = "auto",
    test_frac: Annotated[
        float, typer.Option(help="Share of subjects held out for test (holdout protocol).")
    ] = 0.2,
    val_frac: Annotated[float, typer.Option(help="Share of non-test subjects for validation (4:1).")] = 0.2,
    target: Annotated[Dataset | None, typer.Option(help="Target dataset for --protocol cross.")] = None,
    fold: Annotated[
        str | None, typer.Option(help="demo_fold.pkl fold for --protocol fold (default: first).")
    ] = None,
    frames: Annotated[int, typer.Option(min=1, help="Clip length T in video frames (clips.csv).")] = 256,
    stride: Annotated[int, typer.Option(min=1, help="Clip stride in video frames.")] = 30,
    labeled_frac: Annotated[
        float, typer.Option(help="Share of training subjects whose labels are used (column labeled).")
    ] = 1.0,
    shift_prob: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Probability that a training clip's radar window is shifted."),
    ] = 0.0,
    shift_frames: Annotated[
        int, typer.Option(min=0, help="Forward radar shift in video frames (30 = 1 s).")
    ] = 30,
    workdir: WorkdirOpt = None,
) -> None:
    """Split subjects into train / val (4:1, seeded) and test, and cut the clips table.

    Reads manifests/<dataset>_sessions.csv (and the target's); writes manifests/splits.csv,
    splits.json and clips.csv (T-frame windows with labelled flags and injected sync shifts).
    """
    from pipeline.lock import LockedError, hold_lock
    from pipeline.paths import OutputPathError, check_output_dir
    from pipeline.split import SplitError, write_splits

    wd = Workdir.resolve(workdir)
    datasets = [dataset.value] + ([target.value] if target is not None else [])
    try:
        check_output_dir(wd.manifests, "manifests/")
        with hold_lock(wd.split_lock, f"split manifests in {wd.manifests}"):
            _, meta = write_splits(
                wd.sessions_manifest(dataset.value),
                wd.splits_manifest,
                wd.splits_meta,
                seed,
                protocol,
                test_frac,
                val_frac=val_frac,
                fold=fold,
                target_manifest=wd.sessions_manifest(target.value) if target is not None else None,
                clips_path=wd.clips_manifest,
                frames=frames,
                stride=stride,
                labeled_frac=labeled_frac,
                shift_prob=shift_prob,
                shift_frames=shift_frames,
                stores={d: str(wd.store(d)) for d in datasets},
            )
    except (SplitError, LockedError, OutputPathError) as exc:
        _fail(exc)
    subj, shift = meta["subjects"], meta["shift"]
    typer.echo(
        f"protocol {meta['protocol']}, seed {seed}: train {subj['train']}, val {subj['val']}, "
        f"test {subj['test']} -> {wd.splits_manifest}"
    )
    typer.echo(
        f"{meta['clips']['n']} clips of {frames} frames -> {wd.clips_manifest}; "
        f"{shift['shifted']} of {shift['train_clips']} training clips radar-shifted by {shift_frames} frames"
    )


@app.command()
def train(
    labeled_frac: Annotated[
        float | None,
        typer.Option(
            help="Fraction of training subjects whose labels are used "
            "(the rest learn from the radar teacher only). (default 1.0)"
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for labelled subjects, init and batch order. (default 3)")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name: checkpoints go to runs/<name>/. (default default)")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="auto (cpu without a GPU, else paper), cpu or paper. (default auto)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML file of TrainConfig keys (flat key = value); options given here override it, "
            "unknown keys are errors."
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="supervised, rpm-distill (spectral distillation), output-kd (waveform matching), "
            "fitnets (feature hints) or dml (mutual learning). (default rpm-distill)"
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            help="Video student: factorizephys (52,169 parameters, 72x72), factorizephys-big (56,201, "
            "128x128 only) or physnet (768,577; --frames divisible by 4). (default factorizephys)"
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Student epochs (preset default).")] = None,
    teacher_epochs: Annotated[int | None, typer.Option(help="RF teacher epochs (preset default).")] = None,
    frames: Annotated[int | None, typer.Option(help="Clip length T in frames (preset default).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Batch size (preset default: 4 on CPU, 8 on a GPU).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Student learning rate (preset default).")] = None,
    max_steps_per_epoch: Annotated[int | None, typer.Option(help="Cap on steps per epoch.")] = None,
    mode: Annotated[
        str | None, typer.Option(help="distill (Eq. 1), sup_only or distill_only. (default distill)")
    ] = None,
    peak: Annotated[bool | None, typer.Option("--peak/--no-peak", help="Use the peak component.")] = None,
    background: Annotated[
        bool | None, typer.Option("--background/--no-background", help="Use the background component.")
    ] = None,
    morphology: Annotated[
        bool | None, typer.Option("--morphology/--no-morphology", help="Use the morphology component.")
    ] = None,
    gate: Annotated[
        bool | None, typer.Option("--gate/--no-gate", help="Learn the gate g (else g = 1).")
    ] = None,
    weights: Annotated[
        bool | None,
        typer.Option("--weights/--no-weights", help="Learn the weights alpha (else fixed equal weights)."),
    ] = None,
    policy: Annotated[
        bool | None,
        typer.Option(
            "--policy/--no-policy", help="Use the spectral policy network (else no policy, no meta step)."
        ),
    ] = None,
    bilevel: Annotated[
        bool | None,
        typer.Option(
            "--bilevel/--no-bilevel",
            help="Meta-learn the policy on validation (else train it jointly on L_tr).",
        ),
    ] = None,
    meta_interval: Annotated[int | None, typer.Option(help="Steps between meta steps. (default 10)")] = None,
    baseline: Annotated[
        bool | None, typer.Option("--baseline/--no-baseline", help="Also train the supervised-only student.")
    ] = None,
    num_workers: Annotated[int | None, typer.Option(help="DataLoader workers (preset default).")] = None,
    resume: Annotated[
        bool,
        typer.Option(help="Continue runs/<name>/ from its last epoch checkpoints with its saved config."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(help="With --resume: accept checkpoints saved under a different config (warns)."),
    ] = False,
    dataset: Annotated[
        Dataset | None, typer.Option(help="Dataset whose split and store to train on. (default equipleth)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda. (default auto)")] = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Train the RF teacher, then the video student with spectral distillation (and the baseline).

    Reads manifests/splits.csv and data/<dataset>.zarr; writes runs/<name>/{teacher,student,baseline}.pt,
    *_last.pt (resume state), config.json, log.jsonl and log.csv. With WORLD_SIZE set (torchrun
    --nproc-per-node N -m cli train ...) it trains data-parallel, one process per device.
    """
    import os
    from contextlib import nullcontext

    from pipeline.lock import LockedError, hold_lock
    from pipeline.paths import OutputPathError, PathEscapeError, check_output_dir
    from pipeline.safe_pickle import UnsafePickleError
    from pipeline.store import StoreError
    from train.config import TrainError, resolve_config, saved_run_config
    from train.trainer import train as run_training

    wd = Workdir.resolve(workdir)
    overrides = dict(
        run_name=name,
        dataset=dataset.value if dataset is not None else None,
        seed=seed,
        labeled_frac=labeled_frac,
        preset=preset,
        method=method,
        student=student,
        epochs=epochs,
        teacher_epochs=teacher_epochs,
        frames=frames,
        batch_size=batch_size,
        lr=lr,
        max_steps_per_epoch=max_steps_per_epoch,
        mode=mode,
        peak=peak,
        background=background,
        morphology=morphology,
        gate=gate,
        weights=weights,
        policy=policy,
        bilevel=bilevel,
        meta_interval=meta_interval,
        baseline=baseline,
        num_workers=num_workers,
        device=device,
        resume=resume or None,
        force=force or None,
    )
    try:
        check_output_dir(wd.runs, "runs/")
        wd.run(name or "default")  # a run name never leads outside runs/
        base = saved_run_config(wd, name or "default") if resume else None
        base_source = wd.runs / (name or "default") / "config.json"
        cfg = resolve_config(overrides, config_file=config, base=base, base_source=base_source)
        # One process trains runs/<name>; of a torchrun group only rank 0 (which writes the run) locks it.
        lock_run = int(os.environ.get("RANK", "0")) == 0
        with (
            hold_lock(wd.run_lock(cfg.run_name), f"run {wd.run(cfg.run_name)}") if lock_run else nullcontext()
        ):
            run_training(cfg, wd)
    # CheckpointError is a TrainError
    except (TrainError, StoreError, UnsafePickleError, LockedError, PathEscapeError, OutputPathError) as exc:
        _fail(exc)


@app.command()
def report(
    runs: Annotated[list[str] | None, typer.Argument(help="Run names (default: every run in runs/).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    open_report: Annotated[
        bool, typer.Option("--open", help="Open report.md in a browser / viewer (else just print its path).")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="Do not print the report, only its path.")] = False,
    eval_stride: Annotated[
        int, typer.Option(min=1, help="Window stride of the per-window (release) protocol, in frames.")
    ] = 30,
    workdir: WorkdirOpt = None,
) -> None:
    """Evaluate runs on their held-out test sets and write the report with tables and figures.

    Two protocols (per-window as released; EquiPleth whole-video), methods side by side (student,
    supervised-only student, RF teacher, POS, CHROM, GREEN), seeds aggregated as mean +- std.
    Reads runs/<name>/*.pt (and log.jsonl), manifests/splits.csv and the store; writes
    reports/report.md, metrics.json, metrics.csv, windows.csv and reports/figures/*.png.
    """
    from pipeline.paths import OutputPathError, PathEscapeError, check_output_dir, check_run_name
    from pipeline.safe_pickle import UnsafePickleError
    from pipeline.store import StoreError
    from train.config import TrainError
    from train.report import ReportError, make_report

    wd = Workdir.resolve(workdir)
    try:
        check_output_dir(wd.reports, "reports/")
        for name in runs or []:
            check_run_name(name)
        path = make_report(wd, runs, device, eval_stride, log=typer.echo)
    except (ReportError, StoreError, UnsafePickleError, OutputPathError, PathEscapeError, TrainError) as exc:
        _fail(exc)
    if not quiet:
        typer.echo(path.read_text())
    if open_report:
        import os
        import webbrowser

        opened = False
        if (
            sys.platform in ("darwin", "win32")
            or os.environ.get("DISPLAY")
            or os.environ.get("WAYLAND_DISPLAY")
        ):
            try:
                opened = webbrowser.open(path.resolve().as_uri())
            except webbrowser.Error:
                opened = False
        if not opened:
            typer.echo("no browser available; open the file below")
    typer.echo(f"report written to {path}")


@app.command()
def predict(
    video: Annotated[
        Path, typer.Argument(help="Video file (anything FFmpeg decodes) with one visible face.")
    ],
    checkpoint: Annotated[
        str | None,
        typer.Option(help="Run name under runs/, a run folder or a student .pt (default: newest run)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: <workdir>/predictions/<video stem>/).")
    ] = None,
    stride: Annotated[float, typer.Option(min=0.1, help="Window stride in seconds.")] = 1.0,
    fmt: Annotated[str, typer.Option("--format", help="csv (hr.csv + bvp.csv) or json (hr.json).")] = "csv",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    workdir: WorkdirOpt = None,
) -> None:
    """Heart rate from a video alone: PyAV decode, MTCNN face crop, sliding windows through the student.

    Writes hr.csv (time vs HR per window), bvp.csv, prediction.json and prediction.png.
    """
    from pipeline.paths import OutputPathError, check_output_dir
    from train.checkpoint import CheckpointError
    from train.predict import PredictError, predict_video

    if fmt not in ("csv", "json"):
        _fail(ValueError(f"--format must be csv or json, got {fmt!r}"))
    wd = Workdir.resolve(workdir)
    try:
        check_output_dir(out or wd.root / "predictions", "--out" if out else "predictions/")
        pred = predict_video(video, checkpoint, out, wd, device, stride, fmt, log=typer.echo)
    except (PredictError, OutputPathError, CheckpointError) as exc:
        _fail(exc)
    for kind, path in pred.files.items():
        typer.echo(f"{kind}: {path}")


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
