"""``rpm``: robust remote physiological measurement with radar-to-video spectral distillation.

Stages (each reads and writes under one working directory, see ``pipeline.paths``):
synth -> preprocess -> split -> train -> report.  ``rpm demo`` chains them on CPU-sized data;
``rpm study`` sweeps train + report over seeds and conditions.
"""

from __future__ import annotations

from pipeline.threads import configure_process_threads

# Before anything imports torch: OpenMP reads its thread count and wait policy once, when it loads.
configure_process_threads()

import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from enum import StrEnum  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402
import typer.core  # noqa: E402

from pipeline.errors import OptionError, RpmError  # noqa: E402
from pipeline.paths import Workdir  # noqa: E402

_debug = False  # set by the global --debug option for the running command
# The parser's own exception class (click's, or the copy of click that newer typer releases carry).
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def debug_wanted() -> bool:
    """``--debug`` was given or ``RPM_DEBUG`` is set to anything but empty, 0, false, no or off."""
    env = os.environ.get("RPM_DEBUG", "").strip().lower()
    return _debug or env not in ("", "0", "false", "no", "off")


def error_line(exc: BaseException) -> tuple[str, int]:
    """The one line (after ``error: ``) and the exit status for an exception that ended a command.

    :class:`RpmError` (every stage's own errors): its message, status 1 (2 for an :class:`OptionError`,
    as for the usage errors the option parser reports). ``OSError``: the file and the system's reason,
    status 1. Anything else is unexpected: its type and message, status 3.
    """
    text = " ".join(str(exc).split())
    if isinstance(exc, OptionError):
        return text, 2
    if isinstance(exc, RpmError):
        return text or type(exc).__name__, 1
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
            return f"{exc.filename}{other}: {exc.strerror}", 1
        return text or type(exc).__name__, 1
    return f"{type(exc).__name__}: {text} (unexpected; rerun with --debug for the traceback)", 3


def _error(line: str) -> None:
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)


class OneLineErrors(typer.core.TyperGroup):
    """The CLI's single error boundary: every error ends as one ``error: ...`` line on stderr.

    Usage errors (unknown or out-of-range options, status 2), :class:`RpmError` (status 1, or 2 for an
    :class:`OptionError`), ``OSError`` (status 1) and unexpected exceptions (status 3) alike. With
    ``--debug`` or ``RPM_DEBUG=1`` the Python traceback is printed before that line.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        global _debug
        _debug = False
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `rpm` alone: the help, as the parser shows it
                if not (getattr(typer.core, "HAS_RICH", True) and self.rich_markup_mode is not None):
                    exc.show()  # (rich has printed it already)
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            if getattr(exc, "option_name", None) == "--debug":
                hint = " (--debug goes before the command: rpm --debug COMMAND ...)"
            _error(" ".join(exc.format_message().split()) + hint)
            sys.exit(exc.exit_code)
        except typer.Abort:
            _error("aborted")
            sys.exit(1)
        except Exception as exc:
            line, status = error_line(exc)
            if debug_wanted():
                traceback.print_exc(file=sys.stderr)
            _error(line)
            sys.exit(status)
        sys.exit(status if isinstance(status, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    help="Robust remote physiological measurement: radar teaches a video-only heart-rate model "
    "(RPM-Distill).\n\n"
    "Typical use in an empty folder: rpm synth equipleth; rpm preprocess equipleth; rpm split --seed 3; "
    "rpm train --labeled-frac 0.4; rpm report; rpm predict VIDEO.  Or just: rpm demo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def global_options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="On an error, also print the Python traceback (as RPM_DEBUG=1 does); "
            "without it every error is one line.",
        ),
    ] = False,
) -> None:
    global _debug
    _debug = debug


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


# ---------------------------------------------------------------------------- option checks
# Each runs before its command writes anything, and names the option it refuses.


def check_device(device: str) -> None:
    """``--device``: auto, cpu, or cuda / cuda:N when a CUDA device of that index is present."""
    name, _, index = device.partition(":")
    if device in ("auto", "cpu"):
        return
    if name != "cuda" or (index and not index.isdigit()):
        raise OptionError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(index or 0) >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise OptionError(f"--device {device}: this machine has {have}; use --device cpu or auto")


def check_fraction(option: str, value: float, closed_high: bool = False) -> None:
    """``value`` in (0, 1), or (0, 1] with ``closed_high``; NaN is refused."""
    ok = 0.0 < value <= 1.0 if closed_high else 0.0 < value < 1.0
    if not ok:
        raise OptionError(f"{option} must be in (0, 1{']' if closed_high else ')'}, got {value}")


def check_synth_options(
    dataset: SynthLayout, size: str, seconds: float | None, trials, sessions, crop_size: int
) -> None:
    if size not in ("small", "full"):
        raise OptionError(f"--size must be small or full, got {size!r}")
    if seconds is not None and not math.isfinite(seconds):
        raise OptionError(f"--seconds must be a finite number of seconds, got {seconds}")
    if dataset == SynthLayout.equipleth and sessions is not None:
        raise OptionError("--sessions applies to physdrive only (equipleth has --trials)")
    if dataset == SynthLayout.physdrive and trials is not None:
        raise OptionError("--trials applies to equipleth only (physdrive has --sessions)")
    if dataset == SynthLayout.physdrive and crop_size != 128:
        raise OptionError("--crop-size applies to equipleth only (physdrive writes full-frame video)")


def check_split_options(
    protocol: str, test_frac: float, val_frac: float, labeled_frac: float, target, fold
) -> None:
    protocols = ("auto", "fold", "holdout", "cross")
    if protocol not in protocols:
        raise OptionError(f"--protocol must be one of {', '.join(protocols)}, got {protocol!r}")
    check_fraction("--test-frac", test_frac)
    check_fraction("--val-frac", val_frac)
    check_fraction("--labeled-frac", labeled_frac, closed_high=True)
    if protocol == "cross" and target is None:
        raise OptionError("--protocol cross needs --target (the dataset to test on)")
    if protocol != "cross" and target is not None:
        raise OptionError(f"--target applies to --protocol cross only, not {protocol}")
    if fold is not None and protocol not in ("auto", "fold"):
        raise OptionError(f"--fold applies to --protocol fold (or auto) only, not {protocol}")


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
    seed: Annotated[
        int, typer.Option(min=0, help="Random seed; the same seed writes byte-identical files.")
    ] = 0,
    crop_size: Annotated[
        int, typer.Option(min=16, help="EquiPleth: side of the written face-crop PNGs in pixels.")
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
    from pipeline.lock import hold_lock
    from pipeline.paths import check_output_dir, lock_beside
    from pipeline.synth import GENERATORS
    from pipeline.synth.confounders import DIFFICULTIES

    check_synth_options(dataset, size, seconds, trials, sessions, crop_size)
    if difficulty not in DIFFICULTIES:
        raise OptionError(f"--difficulty must be {' or '.join(DIFFICULTIES)}, got {difficulty!r}")
    target = out or Workdir.resolve(workdir).raw(dataset.value)
    check_output_dir(target, "--out")
    with hold_lock(lock_beside(target), f"synth folder {target}"):
        generator = GENERATORS[dataset.value]
        own = dict(trials=trials, sessions=sessions, crop_size=crop_size)
        shared = dict(subjects=subjects, seconds=seconds, seed=seed, size=size, force=force)
        table = generator.run(target, own, difficulty=difficulty, **shared)
        typer.echo(f"wrote {len(table)} {generator.unit} to {target}")


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
    own recordings: see docs/data-layouts.md).
    """
    from pipeline.dca1000 import DECODERS
    from pipeline.paths import check_output_dir
    from pipeline.recipes import RECIPES
    from pipeline.recipes.base import check_scheduler

    check_scheduler(scheduler)
    if rf_decoder not in DECODERS:
        raise OptionError(f"--rf-decoder must be one of {', '.join(sorted(DECODERS))}, got {rf_decoder!r}")
    wd = Workdir.resolve(workdir)
    check_output_dir(wd.manifests, "manifests/")
    src, dst = root or wd.raw(dataset.value), store or wd.store(dataset.value)
    common = dict(workers=workers, scheduler=scheduler, overwrite=overwrite)
    own = dict(rf_decoder=rf_decoder, min_face_rate=min_face_rate, min_face_frac=min_face_frac)
    manifest = RECIPES[dataset.value].run(src, dst, wd.manifests, own, **common)
    ok = int((manifest.status == "ok").sum())
    typer.echo(f"{ok}/{len(manifest)} sessions ok -> {dst}; manifest {wd.sessions_manifest(dataset.value)}")
    for row in manifest[manifest.status != "ok"].itertuples():
        typer.secho(f"  failed {row.session}: {row.reason}", fg=typer.colors.YELLOW)


@app.command()
def split(
    seed: Annotated[int, typer.Option(min=0, help="Seed for the subject-level split.")] = 3,
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
    frames: Annotated[
        int,
        typer.Option(min=16, help="Window length T listed in clips.csv, >= 16 (training cuts its own)."),
    ] = 256,
    stride: Annotated[int, typer.Option(min=1, help="Window stride listed in clips.csv.")] = 30,
    labeled_frac: Annotated[
        float,
        typer.Option(
            help="Deprecated: only fills clips.csv's labeled column (a preview with this seed); "
            "rpm train --labeled-frac decides which labels a run uses."
        ),
    ] = 1.0,
    shift_prob: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Probability that a training window's radar window is shifted."),
    ] = 0.0,
    shift_frames: Annotated[
        int, typer.Option(min=0, help="Forward radar shift in video frames (30 = 1 s).")
    ] = 30,
    workdir: WorkdirOpt = None,
) -> None:
    """Split subjects into train / val (4:1, seeded) and test, and draw the sync shifts.

    Reads manifests/<dataset>_sessions.csv (and the target's); writes manifests/splits.csv,
    splits.json (seed, subjects, the shift schedule) and clips.csv (the T-frame windows with their
    shifts). Training cuts its windows with the same function at its own length and applies the same
    shifts, so a run at another T (the cpu preset's 128) needs no second split.
    """
    from pipeline.lock import hold_lock
    from pipeline.paths import check_output_dir
    from pipeline.split import write_splits

    check_split_options(protocol, test_frac, val_frac, labeled_frac, target, fold)
    wd = Workdir.resolve(workdir)
    check_output_dir(wd.manifests, "manifests/")
    datasets = [dataset.value] + ([target.value] if target is not None else [])
    if labeled_frac != 1.0:
        typer.secho(
            "note: rpm split --labeled-frac is deprecated; it only fills clips.csv's labeled column. "
            f"Pass --labeled-frac {labeled_frac:g} to rpm train (with --seed {seed} for the same subjects).",
            fg=typer.colors.YELLOW,
        )
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
    subj, shift = meta["subjects"], meta["shift"]
    typer.echo(
        f"protocol {meta['protocol']}, seed {seed}: train {subj['train']}, val {subj['val']}, "
        f"test {subj['test']} -> {wd.splits_manifest}"
    )
    typer.echo(
        f"{meta['clips']['n']} clips of {frames} frames -> {wd.clips_manifest}; "
        f"{shift['shifted']} of {shift['train_clips']} training clips radar-shifted by {shift_frames} frames "
        f"(seed {seed}; a run cuts its own windows with the same shifts)"
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
            "fitnets (feature hints), dml (mutual learning), physformer (PhysFormer with its published "
            "loss) or fusion (Vilesov et al. RGB-radar fusion; radar at test time). (default rpm-distill)"
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            help="Video student: factorizephys (52,169 parameters, 72x72), factorizephys-big (56,201, "
            "128x128 only), physnet (768,577; --frames divisible by 4) or physformer (7,380,865, 128x128; "
            "--frames divisible by 4). (default factorizephys; physformer with --method physformer)"
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
    shift_prob: Annotated[
        float | None,
        typer.Option(
            help="Share of the student's training windows whose radar is shifted by the split's shift "
            "frames, drawn with the split's seed (the teacher trains on aligned windows). "
            "(default: the split's --shift-prob)"
        ),
    ] = None,
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
    from contextlib import nullcontext

    from pipeline.lock import hold_lock
    from pipeline.paths import check_output_dir
    from train.config import resolve_config, saved_run_config
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
        shift_prob=shift_prob,
        baseline=baseline,
        num_workers=num_workers,
        device=device,
        resume=resume or None,
        force=force or None,
    )
    check_output_dir(wd.runs, "runs/")
    wd.run(name or "default")  # a run name never leads outside runs/
    base = saved_run_config(wd, name or "default") if resume else None
    base_source = wd.runs / (name or "default") / "config.json"
    cfg = resolve_config(overrides, config_file=config, base=base, base_source=base_source)
    # One process trains runs/<name>; of a torchrun group only rank 0 (which writes the run) locks it.
    lock_run = int(os.environ.get("RANK", "0")) == 0
    with hold_lock(wd.run_lock(cfg.run_name), f"run {wd.run(cfg.run_name)}") if lock_run else nullcontext():
        run_training(cfg, wd)


@app.command()
def study(
    name: Annotated[
        str,
        typer.Argument(
            help="methods (Table 1), labels (Table 2: labelled fraction 0.2-1.0), ablations (Table 4), "
            "shift (Table 5: sync-shift probability 0-1 x {full, no gate}) or all (their union)."
        ),
    ],
    seeds: Annotated[int, typer.Option(min=1, help="Training seeds per condition (the paper uses 5).")] = 3,
    seed: Annotated[
        int, typer.Option(min=0, help="First training seed: the seeds are SEED .. SEED + SEEDS - 1.")
    ] = 1,
    dataset: Annotated[
        Dataset | None,
        typer.Option(help="Dataset to train on; must be the split's (default: the split's)."),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="fold, holdout or cross: checked against the split's; `rpm split --protocol` decides "
            "(default: the split's)."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="auto (paper with a CUDA GPU, else cpu), cpu (the preset plus the cpu study size: "
            "2 epochs x 50 steps, a meta step every 2) or paper. (default: the --config file's, else auto)"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML file of TrainConfig keys for every run (over the preset and study size)."),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated condition labels to run (e.g. rpm-distill,supervised); default all "
            "(at cpu size all but physformer)."
        ),
    ] = None,
    scheduler: Annotated[
        str,
        typer.Option(
            help="local (one run after another here) or a dask scheduler address tcp://host:port (one "
            "run per worker; GPU runs ask for resources GPU=1: start workers with --resources GPU=1)."
        ),
    ] = "local",
    device: Annotated[
        str | None, typer.Option(help="auto, cpu or cuda for every run (default auto).")
    ] = None,
    report_only: Annotated[
        bool,
        typer.Option(
            "--report-only",
            help="Train nothing: write the study report from the runs finished so far (e.g. while "
            "another process or a cluster is still running the study).",
        ),
    ] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Run the paper's comparisons as seeded, resumable sweeps and judge them with paired statistics.

    Writes studies/<name>/plan.csv before training, then trains and scores each run (runs/study-...,
    marked finished by runs/<run>/study_done.json; finished runs are skipped, unfinished ones resumed
    or redone), then reports/studies/<name>/study.md, runs.csv, comparisons.csv, gate.csv and gate.png.
    Every run is scored on the split's test windows; comparisons are paired across seeds (docs/study.md).
    """
    from pipeline.paths import check_output_dir
    from train.study import run_study
    from train.study.runner import check_scheduler

    wd = Workdir.resolve(workdir)
    check_scheduler(scheduler)
    if device is not None:
        check_device(device)
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
    if methods is not None and not chosen:
        raise OptionError("--methods: give at least one condition label")
    check_output_dir(wd.runs, "runs/")
    check_output_dir(wd.reports, "reports/")
    run_study(
        name,
        wd,
        seeds=seeds,
        seed=seed,
        dataset=dataset.value if dataset is not None else None,
        protocol=protocol,
        preset=preset,
        config_path=config,
        methods=chosen,
        scheduler=scheduler,
        device=device,
        debug=debug_wanted(),
        log=typer.echo,
        report_only=report_only,
    )


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
    from pipeline.paths import check_output_dir, check_run_name
    from train.report import make_report

    check_device(device)
    wd = Workdir.resolve(workdir)
    check_output_dir(wd.reports, "reports/")
    for name in runs or []:
        check_run_name(name, "RUN")
    path = make_report(wd, runs, device, eval_stride, log=typer.echo)
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
    from pipeline.paths import check_output_dir
    from train.predict import predict_video

    if fmt not in ("csv", "json"):
        raise OptionError(f"--format must be csv or json, got {fmt!r}")
    check_device(device)
    if out is not None:
        check_output_dir(out, "--out")
    pred = predict_video(
        video, checkpoint, out, Workdir.resolve(workdir), device, stride, fmt, log=typer.echo
    )
    for kind, path in pred.files.items():
        typer.echo(f"{kind}: {path}")


@app.command()
def demo(
    subjects: Annotated[
        int, typer.Option(min=3, help="Synthetic subjects (at least 3: train, val and test).")
    ] = 6,
    trials: Annotated[int, typer.Option(min=1, help="Trials per subject.")] = 2,
    seconds: Annotated[
        float,
        typer.Option(min=6.0, help="Seconds per trial (at least 6: one 128-frame clip past the PPG offset)."),
    ] = 30.0,
    labeled_frac: Annotated[float, typer.Option(help="Labelled fraction of training subjects.")] = 0.4,
    seed: Annotated[int, typer.Option(min=0, help="Seed for data, split and training.")] = 3,
    workdir: WorkdirOpt = None,
) -> None:
    """Run every stage end to end on a CPU-sized synthetic EquiPleth dataset and print the report."""
    from train.config import PRESETS

    check_fraction("--labeled-frac", labeled_frac, closed_high=True)
    check_synth_options(SynthLayout.equipleth, "small", seconds, trials, None, 128)
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
    clips = {k: PRESETS["cpu"][k] for k in ("frames", "stride")}  # the clips the cpu preset trains on
    split(seed=seed, dataset=Dataset.equipleth, protocol="auto", test_frac=0.2, workdir=wd.root, **clips)
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
