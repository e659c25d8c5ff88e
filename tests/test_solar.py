"""The solar data rebuilt from solar.csv: golden counts from REFERENCES.md and hand checks."""

import pytest
import torch
from conftest import SHARED_DATA

from rnnkit.data.errors import ReaderError
from rnnkit.data.solar import day_examples, solar_days, split_days

DATA = SHARED_DATA / "cntk-book"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")


@pytest.fixture(scope="module")
def days():
    return solar_days(DATA / "solar.csv")


def test_day_grouping_and_split_counts(days):
    assert len(days) == 1040
    train, val, test = split_days(days)
    assert [len(day_examples(p)) for p in (train, val, test)] == [9951, 1248, 1235]
    assert (train[0].date, train[-1].date, val[-1].date, test[-1].date) == (
        "2013-12-01",
        "2016-05-05",
        "2016-08-17",
        "2016-12-01",
    )
    assert len(day_examples(days)) == 12434


def test_first_day_by_hand(days):
    # 2013-12-01: the first readings of solar.csv, divided by 19100
    first = days[0]
    assert first.readings[0].tolist() == pytest.approx(
        [6.300000190734863 / 19100, 1.690000057220459 / 19100]
    )
    assert first.half_hours[0].item() == 14  # 07:00
    examples = day_examples([first])
    assert [e["features"].shape[0] for e in examples] == list(range(2, len(first.readings)))
    assert torch.equal(examples[3]["features"][:, 0], first.readings[:5, 1])
    # almost no sequence holds the day's target among its inputs (the day's total keeps
    # growing after the 14 readings kept, except on a few short days); the book's CTF files
    # leak in about 55 % of their sequences
    leaks = sum(
        bool((e["features"][:, 0] >= e["target"].item() - 1e-9).any()) for e in day_examples(days)
    )
    assert leaks == 7  # of 12,434: days whose whole output came in their first readings


def test_rich_features(days):
    ex = day_examples(days[:1], features="rich")[0]
    assert ex["features"].shape == (2, 6)
    torch.testing.assert_close(ex["features"][:, 2:4].pow(2).sum(1), torch.ones(2))


def test_bad_files_are_located(tmp_path):
    bad = tmp_path / "s.csv"
    bad.write_text("time,solar.current,solar.total\n2013-12-01 07:00:00,1.0,x\n")
    with pytest.raises(
        ReaderError, match=r"s.csv:2:1: expected 'YYYY-MM-DD HH:MM:SS,number,number'"
    ):
        solar_days(bad)
    bad.write_text("when,a,b\n")
    with pytest.raises(ReaderError, match="s.csv:1:1: expected the header"):
        solar_days(bad)
