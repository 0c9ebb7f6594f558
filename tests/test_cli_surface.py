"""The CLI surface is frozen: renaming or dropping a command or option breaks users' scripts, so it must
be a deliberate change to this file (and to the command's usage in README.md and docs/)."""

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
    "study": [
        "--config",
        "--dataset",
        "--device",
        "--methods",
        "--preset",
        "--protocol",
        "--report-only",
        "--scheduler",
        "--seed",
        "--seeds",
        "--workdir",
        "NAME",
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
        "--shift-prob",
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


def test_dataset_choices_are_the_registries():
    """``rpm preprocess`` and ``rpm synth`` dispatch through pipeline.recipes.RECIPES and
    pipeline.synth.GENERATORS: their choices are exactly the registered names, and every option a
    registry entry forwards is an option of the command and a keyword of the function it calls."""
    import inspect

    from cli import Dataset, SynthLayout, preprocess, synth
    from pipeline.recipes import RECIPES
    from pipeline.synth import GENERATORS
    from pipeline.synth.target import LAYOUTS

    assert [d.value for d in Dataset] == list(RECIPES)
    assert [s.value for s in SynthLayout] == list(GENERATORS) == list(LAYOUTS)
    for recipe in RECIPES.values():
        assert set(recipe.options) <= set(inspect.signature(preprocess).parameters)
        assert set(recipe.options.values()) <= set(inspect.signature(recipe.prepare).parameters)
    for generator in GENERATORS.values():
        assert set(generator.options) <= set(inspect.signature(synth).parameters)
        assert set(generator.options) <= set(inspect.signature(generator.generate).parameters)
