"""Every key the report reads (``train/report/schema.py``) is one its writer really writes.

The writers run for real through the CLI on tiny data: ``rpm synth`` (EquiPleth and PhysDrive truth
sidecars), ``rpm preprocess equipleth`` (store attributes, sessions manifest), ``rpm split`` (splits.csv)
and ``rpm train`` (config.json, checkpoints, log.jsonl). A key renamed on either side fails here
instead of silently emptying a table of the report.
"""

import json
from dataclasses import fields

import pandas as pd
import pytest
import zarr
from tiny_data import tiny_train_toml
from typer.testing import CliRunner

from cli import app
from pipeline.recipes import equipleth, physdrive
from pipeline.store import SESSION_ARRAYS
from pipeline.synth import driver as synth_driver
from pipeline.synth import equipleth as synth_equipleth
from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.report import REGISTRY, schema
from train.report.runs import read_log_steps
from train.report.sessions import load_truth, radar_corruptions, session_table
from train.runlog import read_log_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def run(args, workdir):
    result = CliRunner().invoke(app, [*args, "--workdir", str(workdir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A workdir where every writer the report reads from has run once (about 30 s on 2 CPU cores)."""
    wd = tmp_path_factory.mktemp("schema")
    run(["synth", "equipleth", "--subjects", "4", "--trials", "1", "--seconds", "4", "--crop-size", "32"], wd)
    run(["synth", "physdrive", "--subjects", "1", "--sessions", "1", "--seconds", "3"], wd)
    run(["preprocess", "equipleth"], wd)
    run(["split", "--seed", "3", "--frames", "32"], wd)
    toml = tiny_train_toml().replace("baseline = false", "baseline = true")
    assert "baseline = true" in toml
    (wd / "tiny.toml").write_text(toml)
    run(["train", "--config", str(wd / "tiny.toml"), "--name", "run"], wd)
    return wd


def test_config_keys_are_trainconfig_fields():
    names = {f.name for f in fields(TrainConfig)}
    own = {schema.SEED, schema.DATASET, schema.LABELED_FRAC, schema.GATE, schema.POLICY}
    assert own <= names
    assert schema.NOT_EXPERIMENT - names <= set(schema.RUN_CONFIG_EXTRA)
    with pytest.raises(ImportError, match="not a TrainConfig field"):
        schema._field("no_gate")


def test_run_config_and_checkpoints_hold_every_key_read(written):
    run_dir = written / "runs" / "run"
    config = json.loads((run_dir / schema.CONFIG_JSON).read_text())
    read = {schema.SEED, schema.DATASET, schema.LABELED_FRAC, schema.GATE, schema.POLICY}
    missing = (read | set(schema.RUN_CONFIG_EXTRA) | schema.NOT_EXPERIMENT) - set(config)
    assert not missing, f"config.json lacks {sorted(missing)}"
    for method in REGISTRY:
        if method.checkpoint is None:
            continue
        ckpt = load_checkpoint(run_dir / method.checkpoint)
        assert isinstance(ckpt[schema.CKPT_CONFIG], dict)
    student = load_checkpoint(run_dir / "student.pt")
    assert student[schema.CKPT_POLICY], "the rpm-distill student's checkpoint carries its policy"


def test_log_steps_carry_the_gate_and_weights(written):
    run_dir = written / "runs" / "run"
    records = read_log_records(run_dir / schema.LOG_FILE)
    steps = [r for r in records if r[schema.LOG_TYPE] == schema.LOG_STEP and r["stage"] == "student"]
    assert steps
    for r in steps:
        assert set(schema.GATE_KEYS) <= set(r), sorted(r)
    assert any(set(schema.META_KEYS) <= set(r) for r in steps), "meta steps log their loss and gradient norm"
    read = read_log_steps(run_dir)
    assert len(read) == len(steps) and set(schema.GATE_KEYS) <= set(read.columns)


def test_manifests_and_store_hold_every_key_read(written):
    splits = pd.read_csv(written / "manifests" / "splits.csv", dtype=str)
    assert {schema.SPLIT_SESSION, schema.SPLIT_DATASET, schema.SPLIT_SUBJECT, schema.SPLIT} <= set(splits)
    assert schema.TEST in set(splits[schema.SPLIT])
    manifest = pd.read_csv(written / "manifests" / "equipleth_sessions.csv", dtype=str)
    assert {schema.MANIFEST_SESSION, *schema.MANIFEST_CONDITIONS} <= set(manifest.columns)
    root = zarr.open_group(str(written / "data" / "equipleth.zarr"), mode="r")
    for s in manifest[schema.MANIFEST_SESSION]:
        attrs = dict(root[s].attrs)
        assert {schema.STORE_SUBJECT, schema.STORE_SKIN_TYPE, schema.STORE_CONDITIONS} <= set(attrs)
        assert set(schema.STORE_CONDITION_KEYS) <= set(attrs[schema.STORE_CONDITIONS])
        assert {schema.STORE_VIDEO, schema.STORE_BVP} <= set(root[s].array_keys()) <= set(SESSION_ARRAYS)


def _corruption_keys_ok(entry: dict) -> None:
    corruptions = entry[schema.TRUTH_CORRUPTIONS]
    assert isinstance(corruptions, list)
    keys = {
        schema.CORRUPTION_KIND,
        schema.CORRUPTION_START,
        schema.CORRUPTION_END,
        schema.CORRUPTION_MODALITY,
    }
    for c in corruptions:
        assert set(c) == keys, c


def test_truth_sidecars_hold_every_key_read(written):
    assert schema.TRUTH_FILE == synth_driver.TRUTH_FILE  # both generators write it there
    raw = written / "data" / "raw"
    store_names = {
        "equipleth": equipleth.list_sessions(raw / "equipleth"),
        # rpm preprocess physdrive names a store session <subject>_<session>
        "physdrive": [f"{subj}_{sess}" for subj, sess in physdrive.list_sessions(raw / "physdrive")],
    }
    condition_keys = set()
    for dataset, names in store_names.items():
        truth = json.loads((raw / dataset / schema.TRUTH_FILE).read_text())
        entries = truth[schema.TRUTH_ENTRIES[dataset]]
        assert names and {schema.TRUTH_NAMES[dataset](s) for s in names} == set(entries)
        for entry in entries.values():
            assert isinstance(entry[schema.TRUTH_CONDITIONS], dict)
            condition_keys |= set(entry[schema.TRUTH_CONDITIONS])
            _corruption_keys_ok(entry)
    assert set(schema.TRUTH_CONDITION_KEYS) <= condition_keys


def test_truth_radar_corruptions_are_read():
    events = [{"kind": "occlusion", "start_s": 0.5, "end_s": 1.5}]
    plan = synth_equipleth.plan_trial(1, 1, 4.0, 0, 32, overrides={"radar_events": events})
    entry = synth_equipleth.trial_truth(plan)
    _corruption_keys_ok(entry)
    assert (0.5, 1.5, "occlusion") in radar_corruptions(entry)


def test_the_report_finds_the_truth_of_each_test_session(written):
    splits = pd.read_csv(written / "manifests" / "splits.csv", dtype=str)
    test = splits[splits.split == "test"].session.tolist()
    from pipeline.paths import Workdir

    wd = Workdir(written)
    truth, _ = load_truth(wd, "equipleth")
    table = session_table(wd, "equipleth", test, truth)
    for row in table.itertuples():
        assert row.corruptions is not None  # the sidecar's entry was found
        entry = truth["trials"][row.session][schema.TRUTH_CONDITIONS]
        assert row.conditions["motion"] == entry["motion"]
        assert row.conditions["talking"] == ("talking" if entry["talking"] else "no talking")
