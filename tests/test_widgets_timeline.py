"""The codebook explorer's timeline: perplexity and dead codes of every run against the step."""
import numpy as np

from dvl_helpers.training import History
from dvl_helpers.widgets import codebook_explorer, usage_summary

K = 12


def history(steps, seed, collapse):
    rng = np.random.default_rng(seed)
    h = History()
    for t, step in enumerate(steps):
        alive = K - (2 * t if collapse else 0)
        p = np.r_[rng.dirichlet(np.ones(alive)), np.zeros(K - alive)]
        h.log(step, usage=rng.multinomial(300, p).astype(float))
    return h


def make():
    return codebook_explorer({"vanilla": history([10, 20, 30, 40, 50], 0, True),
                              "EMA": history([25, 50], 1, False)})


def test_timeline_draws_every_run():
    w = make()
    assert w.timeline_image in w.children and w.timeline_image.value[:4] == b"\x89PNG"
    assert "dvl-codebook-explorer" in w._dom_classes
    lines = w._timeline["perplexity"]
    assert set(lines) == {"vanilla", "EMA"}
    steps, usage = w.runs["vanilla"]
    assert np.array_equal(lines["vanilla"].get_xdata(), steps)
    assert np.allclose(lines["vanilla"].get_ydata(), [usage_summary(u)["perplexity"] for u in usage])
    assert lines["vanilla"].get_ydata()[-1] < lines["vanilla"].get_ydata()[0]   # the collapse


def test_threshold_and_slider_update_the_timeline():
    w = make()
    steps, usage = w.runs["vanilla"]
    for threshold in (0, 5, 20):
        before = w.timeline_image.value
        w.threshold.value = threshold
        dead = w._timeline["dead"]["vanilla"].get_ydata()
        assert np.array_equal(dead, (usage <= threshold).sum(1))
        if threshold:
            assert w.timeline_image.value != before
    w.slider.value = 20
    assert all(c.get_xdata()[0] == 20 for c in w._timeline["cursors"])


def test_timeline_can_be_left_out():
    w = codebook_explorer(history([1, 2, 3], 0, False), timeline=False)
    assert w.timeline_figure is None and w.timeline_image not in w.children
    w.slider.value = 2
    assert w.state()["step"] == 2
