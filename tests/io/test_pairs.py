import math

import pytest

from ldmdetect.io.pairs import Pair, read_pairs_csv, write_pairs_csv


def test_pairs_round_trip_and_relative_paths_follow_the_csv(tmp_path):
    path = write_pairs_csv([Pair("fake/a.png", "real/b.png", 0.5)], tmp_path / "pairs.csv")
    (pair,) = read_pairs_csv(path)
    assert (pair.fake, pair.real) == (str(tmp_path / "fake/a.png"), str(tmp_path / "real/b.png"))
    assert pair.similarity == pytest.approx(0.5)
    given = tmp_path / "given.csv"
    given.write_text("fake,real\n/x/f.png,/x/r.png\n")  # given pairs carry no similarity
    assert math.isnan(read_pairs_csv(given)[0].similarity)


def test_a_pairs_file_without_its_columns_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\nx.png,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*fake"):
        read_pairs_csv(bad)
