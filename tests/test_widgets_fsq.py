"""The FSQ grid explorer: its private FSQ math and every control, driven headless."""
import itertools

import ipywidgets
import numpy as np
import pytest

from dvl_helpers.widgets import fsq as W
from dvl_helpers.widgets import FSQGridExplorer, fsq_grid_explorer


@pytest.mark.parametrize("level", range(2, 13))
def test_bound_and_round_give_exactly_l_levels(level):
    levels = np.array(level)
    z = np.linspace(-12, 12, 20001)
    q = np.round(W._fsq_bound(z, levels))
    expected = np.arange(-(level // 2), level - level // 2)          # even L: -L/2 .. L/2 - 1
    assert np.array_equal(np.unique(q), expected)
    assert np.round(W._fsq_bound(np.array(0.0), levels)) == 0                # z = 0 lands on level 0
    assert np.all(np.diff(W._fsq_bound(z, levels)) >= 0)
    n = W._fsq_normalise(expected.astype(float), levels)
    assert n.min() == -1.0 and n.max() <= 1.0


def test_odd_levels_are_the_papers_plain_tanh():
    z = np.linspace(-3, 3, 101)
    for level in (3, 5, 7):
        half = (level - 1) / 2
        assert np.allclose(W._fsq_bound(z, np.array(level)), half * (1 + 1e-3) * np.tanh(z))


def test_indices_number_the_grid_without_gaps():
    levels = np.array([4, 3, 5])
    grid = W._fsq_grid(levels)
    assert grid.shape == (60, 3)
    indices = [W._fsq_index(np.round(code * (levels // 2)), levels) for code in grid]
    assert sorted(indices) == list(range(60))
    assert W._fsq_index(np.array([-2, -1, -2]), levels) == 0                  # all lowest levels
    assert W._fsq_index(np.array([-1, -1, -2]), levels) == 1                  # first dimension fastest
    assert W._fsq_index(np.array([-2, 0, -2]), levels) == 4


@pytest.fixture
def explorer():
    return fsq_grid_explorer(levels=(8, 5, 5), z=(0.7, -0.4, 1.2))


def test_is_a_vbox_with_its_controls(explorer):
    assert isinstance(explorer, ipywidgets.VBox) and isinstance(explorer, FSQGridExplorer)
    def walk(w):
        yield w
        for c in getattr(w, "children", ()):
            yield from walk(c)
    inside = list(walk(explorer))
    for control in (explorer.dims, *explorer.level_sliders, *explorer.z_sliders, explorer.image):
        assert any(control is c for c in inside)
    assert "dvl-fsq-grid-explorer" in explorer._dom_classes


def test_state_is_the_path_of_the_point(explorer):
    s = explorer.state()
    assert s["dims"] == 3 and s["levels"] == [8, 5, 5] and s["codebook_size"] == 200
    # z = 0.7 with L = 8: 3.5035 tanh(0.7 + atanh(0.5 / 3.5035)) - 0.5 = 1.910 -> 2 -> 2/4
    assert s["bounded"][0] == pytest.approx(1.910, abs=1e-3)
    assert s["rounded"] == [2, -1, 2] and s["normalised"] == [0.5, -0.5, 1.0]
    assert s["index"] == (2 + 4) + 8 * (-1 + 2) + 40 * (2 + 2)
    assert "code <b>174</b> of 200" in explorer.status.value


def test_moving_z_moves_the_point_and_redraws(explorer):
    before = explorer.image.value
    explorer.z_sliders[0].value = -2.5
    s = explorer.state()
    assert s["z"][0] == -2.5 and s["rounded"][0] == -4 and s["normalised"][0] == -1.0
    assert explorer.image.value != before
    a = explorer._artists
    assert list(a["z_marks"][0].get_xdata()) == [-2.5, -2.5]
    assert np.allclose(a["p_code"].get_data_3d()[0], [-1.0])


def test_levels_change_the_grid(explorer):
    explorer.level_sliders[1].value = 3
    s = explorer.state()
    assert s["levels"] == [8, 3, 5] and s["codebook_size"] == 120
    assert len(explorer._artists["ax3"].collections[0].get_offsets()) == 120
    assert "8 × 3 × 5 = 120 codes" in explorer._artists["caption"].get_text()
    assert len(explorer._artists["dim_axes"][1].get_yticks()) == 3


def test_two_and_three_dimensions(explorer):
    explorer.dims.value = 2
    s = explorer.state()
    a = explorer._artists
    assert s["dims"] == 2 and s["codebook_size"] == 40 and len(s["z"]) == 2
    assert a["ax2"].get_visible() and not a["ax3"].get_visible()
    assert not a["dim_axes"][2].get_visible()
    assert explorer.level_sliders[2].disabled and explorer.z_sliders[2].disabled
    assert len(a["ax2"].collections[0].get_offsets()) == 40
    codes = {tuple(p) for p in a["ax2"].collections[0].get_offsets().tolist()}
    assert codes == set(itertools.product([-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75],
                                          [-1, -0.5, 0, 0.5, 1]))
    explorer.dims.value = 3
    assert a["ax3"].get_visible() and not explorer.z_sliders[2].disabled


def test_bad_arguments():
    with pytest.raises(ValueError, match="levels must be 2 or 3 integers"):
        fsq_grid_explorer(levels=(1, 5))
    with pytest.raises(ValueError, match="levels must be 2 or 3 integers"):
        fsq_grid_explorer(levels=(5, 5, 5, 5))
    with pytest.raises(ValueError, match="z must hold one number"):
        fsq_grid_explorer(levels=(5, 5), z=(0.0,))
    assert fsq_grid_explorer(levels=(5, 3)).state()["dims"] == 2
