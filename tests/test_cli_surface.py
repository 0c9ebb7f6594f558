"""The CLI surface is frozen: renaming or dropping a command or option breaks users' scripts, so it must
be a deliberate change to this file (and to the README's stage table)."""

import typer

from cli import app

SURFACE = {
    "demo": ["--labeled-frac", "--seconds", "--seed", "--subjects", "--trials", "--workdir"],
    "predict": ["--checkpoint", "--device", "--format", "--out", "--stride", "--workdir", "VIDEO"],
    "preprocess": [
        "--min-face-frac",
        "--min-face-rate",
        "--no-overwrite",
        "--overwrite",
        "--rf-decoder",
        "--root",
        "--scheduler",
        "--store",
        "--workdir",
        "--workers",
        "DATASET",
    ],
    "report": ["--device", "--eval-stride", "--no-quiet", "--open", "--quiet", "--workdir", "RUNS"],
    "split": [
        "--dataset",
        "--fold",
        "--frames",
        "--labeled-frac",
        "--protocol",
        "--seed",
        "--shift-frames",
        "--shift-prob",
        "--stride",
        "--target",
        "--test-frac",
        "--val-frac",
        "--workdir",
    ],
    "synth": [
        "--crop-size",
        "--difficulty",
        "--force",
        "--no-force",
        "--out",
        "--seconds",
        "--seed",
        "--sessions",
        "--size",
        "--subjects",
        "--trials",
        "--workdir",
        "DATASET",
    ],
    "train": [
        "--background",
        "--baseline",
        "--batch-size",
        "--bilevel",
        "--config",
        "--dataset",
        "--device",
        "--epochs",
        "--force",
        "--frames",
        "--gate",
        "--labeled-frac",
        "--lr",
        "--max-steps-per-epoch",
        "--meta-interval",
        "--method",
        "--mode",
        "--morphology",
        "--name",
        "--no-background",
        "--no-baseline",
        "--no-bilevel",
        "--no-force",
        "--no-gate",
        "--no-morphology",
        "--no-peak",
        "--no-policy",
        "--no-resume",
        "--no-weights",
        "--num-workers",
        "--peak",
        "--policy",
        "--preset",
        "--resume",
        "--seed",
        "--student",
        "--teacher-epochs",
        "--weights",
        "--workdir",
    ],
}


def surface() -> dict[str, list[str]]:
    out = {}
    for name, cmd in typer.main.get_command(app).commands.items():
        names = []
        for p in cmd.params:
            if p.param_type_name == "argument":
                names.append(p.name.upper())
            else:
                names += [o for o in p.opts + p.secondary_opts if o.startswith("--")]
        out[name] = sorted(names)
    return out


GLOBAL_OPTIONS = ["--debug", "--help"]  # rpm [--debug] COMMAND ...


def test_cli_surface_is_frozen():
    assert surface() == {k: sorted(v) for k, v in SURFACE.items()}
    group = typer.main.get_command(app)
    ctx = group.make_context("rpm", ["split"])
    names = sorted(o for p in group.get_params(ctx) for o in p.opts + p.secondary_opts if o.startswith("--"))
    assert names == GLOBAL_OPTIONS


def test_every_command_and_option_explains_itself():
    for name, cmd in typer.main.get_command(app).commands.items():
        assert cmd.help and len(cmd.help) > 40, name
        for p in cmd.params:
            assert getattr(p, "help", None), f"{name} {p.name} has no --help text"
