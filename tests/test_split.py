import pandas as pd
import pytest

from pipeline.split import SplitError, make_splits, train_val_subjects


def sessions(n_subjects=11, trials=3, fold_test=()):
    rows = []
    for s in range(1, n_subjects + 1):
        for t in range(1, trials + 1):
            rows.append(
                {
                    "session": f"v_{s}_{t}",
                    "dataset": "equipleth",
                    "subject": str(s),
                    "trial": str(t),
                    "status": "ok",
                    "fold_split": "test" if s in fold_test else "",
                }
            )
    return pd.DataFrame(rows)


def test_same_seed_same_split_and_shuffled_input_does_not_matter():
    df = sessions()
    a, meta_a = make_splits(df, seed=3)
    b, meta_b = make_splits(df.sample(frac=1, random_state=1), seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert meta_a == meta_b
    c, _ = make_splits(df, seed=4)
    assert not a.equals(c)


@pytest.mark.parametrize("seed", range(5))
def test_subjects_disjoint_and_four_to_one(seed):
    splits, meta = make_splits(sessions(), seed=seed)
    by_split = {k: set(splits.loc[splits.split == k, "subject"]) for k in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    assert splits.groupby("subject").split.nunique().max() == 1
    assert len(by_split["test"]) == 2  # floor(11 * 0.2)
    assert (len(by_split["train"]), len(by_split["val"])) == (7, 2)  # 9 subjects at 4:1


def test_fold_protocol_uses_fold_test_subjects():
    splits, meta = make_splits(sessions(fold_test=(2, 5)), seed=0)
    assert meta["protocol"] == "fold"
    assert set(splits.loc[splits.split == "test", "subject"]) == {"2", "5"}


def test_failed_sessions_are_not_split():
    df = sessions()
    df.loc[0, "status"] = "failed"
    splits, _ = make_splits(df, seed=0)
    assert "v_1_1" not in set(splits.session)


def test_too_few_subjects_is_a_clear_error():
    with pytest.raises(SplitError, match="at least 2"):
        train_val_subjects(["1"], seed=0)
