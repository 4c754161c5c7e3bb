"""ml.slicing: which frames each strategy decodes."""

import pytest

from ml.slicing import frame_indices


def test_central_is_the_middle_frame_or_the_given_centre():
    assert frame_indices(60, "central") == [30]
    assert frame_indices(1, "central") == [0]
    assert frame_indices(60, "central", center=12) == [12]


def test_slab_is_centred_and_stays_inside_the_volume():
    assert frame_indices(60, "slab", slab=5) == [28, 29, 30, 31, 32]
    assert frame_indices(60, "slab", slab=5, center=1) == [0, 1, 2, 3, 4]
    assert frame_indices(60, "slab", slab=5, center=59) == [55, 56, 57, 58, 59]
    assert frame_indices(3, "slab", slab=5) == [0, 1, 2]


def test_sampled_takes_one_frame_from_the_middle_of_each_bin():
    assert frame_indices(60, "sampled", n_slices=4) == [7, 22, 37, 52]
    assert frame_indices(5, "sampled", n_slices=8) == [0, 1, 2, 3, 4]
    picked = frame_indices(66, "sampled", n_slices=16)
    assert len(set(picked)) == 16 and picked == sorted(picked)


def test_all_and_bad_arguments():
    assert frame_indices(4, "all") == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="unknown frame strategy"):
        frame_indices(4, "middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside"):
        frame_indices(4, "central", center=4)
    with pytest.raises(ValueError):
        frame_indices(0, "central")
