"""The codebook explorer, driven headless: every control changes what the figure shows."""
import ipywidgets
import numpy as np
import pytest

from dvl_helpers.training import History
from dvl_helpers.widgets import CodebookExplorer, codebook_explorer, usage_summary

K = 16


def history(steps, seed=0, collapse=False):
    """A History whose ``usage`` frames are multinomial counts ``[T, K]``; collapsing runs lose codes."""
    rng = np.random.default_rng(seed)
    h = History()
    for t, step in enumerate(steps):
        alive = K - (t * 3 if collapse else 0)
        p = np.r_[rng.dirichlet(np.ones(alive)), np.zeros(K - alive)]
        h.log(step, usage=rng.multinomial(400, p).astype(float), loss=1.0 / step)
    return h


@pytest.fixture
def explorer():
    return codebook_explorer({"vanilla": history([10, 20, 30, 40], collapse=True),
                              "ema": history([20, 40], seed=1)})


def shown_counts(w, name):
    """The bar heights (alive + dead) drawn in ``name``'s panel, sorted as drawn."""
    a = w._artists[name]
    return a["bars"].get_data().values + a["dead_bars"].get_data().values


def test_is_a_vbox_holding_its_controls(explorer):
    assert isinstance(explorer, ipywidgets.VBox) and isinstance(explorer, CodebookExplorer)

    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    inside = list(walk(explorer))
    for control in (explorer.slider, explorer.threshold, explorer.log_toggle, explorer.play, explorer.image):
        assert any(control is w for w in inside)
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(explorer.figure.axes) == 2


def test_slider_spans_the_logged_steps(explorer):
    s = explorer.slider
    assert (s.min, s.max, s.step, s.value) == (10, 40, 10, 40)
    assert (explorer.play.min, explorer.play.max) == (10, 40)


def test_moving_the_slider_changes_the_frame_of_every_run(explorer):
    runs = explorer.runs
    before = explorer.image.value
    explorer.slider.value = 10
    state = explorer.state()
    assert state["step"] == 10
    assert state["runs"]["vanilla"]["step"] == 10
    assert state["runs"]["ema"]["step"] == 20  # nothing logged before 20: its first frame
    assert np.array_equal(shown_counts(explorer, "vanilla"), np.sort(runs["vanilla"][1][0])[::-1])
    assert explorer.image.value != before
    explorer.slider.value = 30
    state = explorer.state()
    assert state["runs"]["vanilla"]["step"] == 30 and state["runs"]["ema"]["step"] == 20
    assert np.array_equal(shown_counts(explorer, "ema"), np.sort(runs["ema"][1][0])[::-1])
    assert "step 30" in explorer.figure.axes[0].get_title()


def test_collapse_shows_as_more_dead_codes_and_lower_perplexity(explorer):
    explorer.slider.value = 10
    early = explorer.state()["runs"]["vanilla"]
    explorer.slider.value = 40
    late = explorer.state()["runs"]["vanilla"]
    assert late["dead"] >= 9 > early["dead"]
    assert late["perplexity"] < early["perplexity"]
    assert late["used"] == K - late["dead"]
    assert f"{late['dead']} dead" in explorer.figure.axes[0].get_title()


def test_threshold_counts_dead_codes(explorer):
    counts = explorer.runs["ema"][1][-1]
    assert explorer.threshold.max == 400 // K  # up to the mean count of a code
    dead = []
    for threshold in (0, 10, 20, explorer.threshold.max):
        explorer.threshold.value = threshold
        state = explorer.state()
        assert state["threshold"] == threshold
        assert state["runs"]["ema"]["dead"] == int((counts <= threshold).sum())
        drawn = explorer._artists["ema"]
        assert drawn["line"].get_ydata()[0] == threshold
        assert np.count_nonzero(drawn["bars"].get_data().values) == int((counts > threshold).sum())
        assert drawn["dead_span"].get_width() == state["runs"]["ema"]["dead"]
        dead.append(state["runs"]["ema"]["dead"])
    assert dead == sorted(dead) and dead[-1] > dead[0]


def test_log_toggle_switches_the_y_scale(explorer):
    linear = explorer.image.value
    explorer.log_toggle.value = True
    assert explorer.state()["log_scale"]
    assert all(ax.get_yscale() == "symlog" for ax in explorer.figure.axes)
    assert explorer.image.value != linear
    explorer.log_toggle.value = False
    assert all(ax.get_yscale() == "linear" for ax in explorer.figure.axes)


def test_initial_arguments_and_a_single_history():
    w = codebook_explorer(history([5, 10, 15]), dead_threshold=3, log_scale=True)
    assert list(w.runs) == [""] and len(w.figure.axes) == 1
    assert w.figure.axes[0].get_title().startswith("step 15")  # no run name to show
    assert w.threshold.value == 3 and w.log_toggle.value
    assert w.figure.axes[0].get_yscale() == "symlog"
    assert w.state()["runs"][""]["num_codes"] == K


def test_usage_summary():
    uniform = usage_summary(np.full(8, 5.0))
    assert uniform["perplexity"] == pytest.approx(8) and uniform["dead"] == 0 and uniform["used"] == 8
    one = usage_summary(np.r_[10.0, np.zeros(7)], dead_threshold=0)
    assert one["perplexity"] == pytest.approx(1) and one["dead"] == 7
    empty = usage_summary(np.zeros(4))
    assert np.isfinite(empty["perplexity"]) and empty["dead"] == 4
    assert usage_summary(np.array([1.0, 2, 3, 10]), dead_threshold=2)["dead"] == 2
    with pytest.raises(ValueError, match=r"\[K\]"):
        usage_summary(np.zeros((2, 3)))


def test_errors_name_what_is_missing():
    h = History()
    h.log(1, loss=1.0)
    with pytest.raises(KeyError, match="no 'usage' metric"):
        codebook_explorer(h)
    with pytest.raises(ValueError, match="empty"):
        codebook_explorer({})
    flat = History()
    flat.log(1, usage=3.0)
    with pytest.raises(ValueError, match=r"\[T, K\]"):
        codebook_explorer(flat)
