"""The training loop ``train`` and its ``History``."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dvl_helpers as dvl
from dvl_helpers.nn import Decoder, Encoder
from dvl_helpers.training import History, train


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _linear_batches(n=4, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([[2.0], [-1.0], [0.5]])
    out = []
    for _ in range(n):
        x = torch.randn(batch, 3, generator=g)
        out.append((x, x @ w))
    return out


def _regression_step(model, batch):
    x, y = batch
    return {"loss": F.mse_loss(model(x), y)}


def _fit(steps=5, **kwargs):
    model = nn.Linear(3, 1)
    kwargs = {"lr": 0.05, "device": "cpu", "progress": False, **kwargs}
    return model, train(model, _linear_batches(), _regression_step, steps=steps, **kwargs)


# --- learning ---------------------------------------------------------------------------


def test_conv_autoencoder_learns_digits():
    cfg = dvl.get_preset("smoke")
    ds = dvl.data.load(cfg.dataset_gray, "train", max_images=cfg.max_train_images)
    loader = dvl.data.loader(ds, cfg.batch_size, seed=0)
    small = dict(hidden=16, res_hidden=4, num_res_blocks=1)
    model = nn.Sequential(Encoder(1, out_channels=8, **small), Decoder(8, 1, **small), nn.Sigmoid())

    def step_fn(model, batch):
        x, _ = batch
        return {"loss": F.mse_loss(model(x), x)}

    history = train(model, loader, step_fn, steps=cfg.steps, lr=cfg.lr, device="cpu", progress=False)
    loss = history["loss"]
    assert len(loss) == cfg.steps
    np.testing.assert_array_equal(history.steps("loss"), np.arange(1, cfg.steps + 1))
    first, last = loss[:5].mean(), loss[-5:].mean()
    # about 0.15 -> 0.05 on this seed; a loop that does not learn stays near 0.15
    assert last < 0.6 * first, (first, last)
    assert np.isfinite(loss).all()


def test_custom_optimizer_is_used():
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: nothing may change
    before = [p.detach().clone() for p in model.parameters()]
    train(model, _linear_batches(), _regression_step, steps=3, lr=1.0, optimizer=opt,
          device="cpu", progress=False)
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p)


def test_loader_shorter_than_steps_is_cycled():
    batches = [torch.full((2, 1), float(i)) for i in range(3)]
    seen = []

    def step_fn(model, batch):
        seen.append(int(batch[0, 0]))
        return {"loss": model(batch).pow(2).mean()}

    history = train(nn.Linear(1, 1), batches, step_fn, steps=8, device="cpu", progress=False)
    assert seen == [0, 1, 2, 0, 1, 2, 0, 1]
    assert len(history["loss"]) == 8


def test_empty_loader_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="no batch"):
        train(nn.Linear(3, 1), [], _regression_step, steps=2, device="cpu", progress=False)


def test_zero_steps_and_bad_arguments():
    model = nn.Linear(3, 1)
    before = model.weight.detach().clone()
    history = train(model, _linear_batches(), _regression_step, steps=0, device="cpu", progress=False)
    assert len(history) == 0 and torch.equal(model.weight, before)
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        train(model, _linear_batches(), _regression_step, steps=-1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="log_every must be >= 1, got 0"):
        train(model, _linear_batches(), _regression_step, steps=2, log_every=0, device="cpu", progress=False)


def test_log_every():
    _, history = _fit(steps=7, log_every=3)
    np.testing.assert_array_equal(history.steps("loss"), [3, 6, 7])  # and always the last step


# --- History -----------------------------------------------------------------------------


def test_history_api():
    h = History()
    for step in range(1, 4):
        h.log(step, loss=torch.tensor(1.0 / step, requires_grad=True), lr=0.1 * step,
              usage=torch.tensor([step, 0.0, 2 * step]))
    h.log(3, eval_psnr=np.float32(20.5))
    assert h.keys() == ["loss", "lr", "usage", "eval_psnr"]
    assert "loss" in h and "nope" not in h
    assert len(h) == 3
    np.testing.assert_allclose(h["loss"], [1.0, 0.5, 1 / 3])
    assert h["loss"].dtype == np.float64 and h["loss"].shape == (3,)
    np.testing.assert_array_equal(h.steps("loss"), [1, 2, 3])
    np.testing.assert_array_equal(h.steps("eval_psnr"), [3])
    assert h.last("lr") == pytest.approx(0.3)
    assert h.last("eval_psnr") == pytest.approx(20.5)
    # array metrics are stacked [T, K]
    assert h["usage"].shape == (3, 3)
    np.testing.assert_array_equal(h["usage"][:, 2], [2, 4, 6])
    np.testing.assert_array_equal(h.last("usage"), [3, 0, 6])
    assert "loss[3]" in repr(h) and "usage[3]" in repr(h)


def test_history_stores_copies_not_references():
    h = History()
    counts = torch.zeros(3)
    h.log(1, usage=counts)
    counts += 1
    h.log(2, usage=counts)
    np.testing.assert_array_equal(h["usage"], [[0, 0, 0], [1, 1, 1]])


def test_history_unknown_key_message():
    h = History()
    h.log(1, loss=1.0, rec=0.5)
    for call in (lambda: h["los"], lambda: h.steps("los"), lambda: h.last("los")):
        with pytest.raises(KeyError) as err:
            call()
        assert "'los'" in str(err.value) and "loss, rec" in str(err.value)
    with pytest.raises(KeyError, match="recorded: none"):
        History()["loss"]


def test_history_state_dict_round_trip():
    h = History()
    h.log(1, loss=2.0, usage=torch.arange(3.0))
    h.log(2, loss=1.0, usage=torch.arange(3.0) * 2)
    copy = History()
    copy.load_state_dict(h.state_dict())
    assert copy.keys() == h.keys()
    np.testing.assert_array_equal(copy["usage"], h["usage"])
    np.testing.assert_array_equal(copy.steps("loss"), [1, 2])
    copy.log(3, loss=0.5)  # the copy is independent
    assert len(h["loss"]) == 2


def test_every_returned_metric_is_logged():
    def step_fn(model, batch):
        x, y = batch
        pred = model(x)
        return {"loss": F.mse_loss(pred, y), "mae": (pred - y).abs().mean(), "err": (pred - y).abs()[:4, 0]}

    history = train(nn.Linear(3, 1), _linear_batches(), step_fn, steps=3, device="cpu", progress=False)
    assert history.keys() == ["loss", "mae", "err"]
    assert history["err"].shape == (3, 4)


# --- evaluation ---------------------------------------------------------------------------


def test_eval_fn_every_eval_every_and_at_the_end():
    calls = []

    def eval_fn(model):
        calls.append((model.training, torch.is_grad_enabled()))
        return {"score": len(calls), "vec": torch.ones(2) * len(calls)}

    model, history = _fit(steps=7, eval_fn=eval_fn, eval_every=3)
    assert calls == [(False, False)] * 3  # eval mode, no gradients
    assert model.training  # train mode is restored
    np.testing.assert_array_equal(history.steps("eval_score"), [3, 6, 7])
    np.testing.assert_array_equal(history["eval_score"], [1, 2, 3])
    assert history["eval_vec"].shape == (3, 2)
    assert "score" not in history


def test_eval_fn_not_repeated_when_last_step_is_an_eval_step():
    calls = []
    _, history = _fit(steps=6, eval_fn=lambda m: calls.append(1) or {"n": len(calls)}, eval_every=3)
    assert len(calls) == 2
    np.testing.assert_array_equal(history.steps("eval_n"), [3, 6])


def test_eval_fn_only_at_the_end_by_default():
    _, history = _fit(steps=4, eval_fn=lambda m: {"one": 1.0})
    np.testing.assert_array_equal(history.steps("eval_one"), [4])


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_is_saved_then_loaded_without_training(tmp_path):
    ckpt = tmp_path / "sub" / "model.pt"
    model, history = _fit(steps=5, ckpt_path=ckpt, eval_fn=lambda m: {"w": m.weight[0, 0]})
    assert ckpt.exists()

    def must_not_run(model, batch):
        raise AssertionError("step_fn called although the checkpoint exists")

    fresh = nn.Linear(3, 1)
    assert not torch.equal(fresh.weight, model.weight)
    loaded = train(fresh, _linear_batches(), must_not_run, steps=5, ckpt_path=str(ckpt),
                   eval_fn=must_not_run, device="cpu", progress=False)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.keys() == history.keys()
    for key in history.keys():
        np.testing.assert_array_equal(loaded[key], history[key])
        np.testing.assert_array_equal(loaded.steps(key), history.steps(key))


def test_no_checkpoint_written_without_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit(steps=2)
    assert list(tmp_path.iterdir()) == []


# --- gradient clipping, precision, errors -------------------------------------------------------


def _huge_gradient_update(clip_grad):
    model = nn.Linear(4, 1, bias=False)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x = torch.ones(2, 4)

    def step_fn(model, batch):
        return {"loss": 1e6 * model(batch).sum()}  # gradient 2e6 per weight

    train(model, [x], step_fn, steps=1, optimizer=opt, clip_grad=clip_grad, device="cpu", progress=False)
    return (model.weight.detach() - before).norm().item()


def test_clip_grad_limits_the_update():
    assert _huge_gradient_update(None) == pytest.approx(4e6, rel=1e-4)  # |grad| = 2e6 * sqrt(4)
    assert _huge_gradient_update(0.5) == pytest.approx(0.5, rel=1e-4)  # SGD, lr 1: update = clipped grad


def test_autocast_runs_in_bfloat16_on_cpu():
    dtypes = []

    def step_fn(model, batch):
        x, y = batch
        pred = model(x)
        dtypes.append(pred.dtype)
        return {"loss": F.mse_loss(pred.float(), y)}

    model = nn.Linear(3, 1)
    history = train(model, _linear_batches(), step_fn, steps=3, autocast=True, device="cpu", progress=False)
    assert dtypes == [torch.bfloat16] * 3
    assert model.weight.dtype == torch.float32  # weights stay float32
    assert np.isfinite(history["loss"]).all()
    dtypes.clear()
    train(model, _linear_batches(), step_fn, steps=1, device="cpu", progress=False)
    assert dtypes == [torch.float32]


def test_step_fn_without_loss_is_a_clear_key_error():
    def step_fn(model, batch):
        x, y = batch
        return {"rec": F.mse_loss(model(x), y)}

    with pytest.raises(KeyError) as err:
        train(nn.Linear(3, 1), _linear_batches(), step_fn, steps=2, device="cpu", progress=False)
    assert "'loss'" in str(err.value) and "rec" in str(err.value)


@pytest.mark.parametrize("loss, match", [
    (lambda pred: pred, r"scalar tensor, got shape \(8, 1\)"),
    (lambda pred: 1.0, "scalar tensor, got float"),
])
def test_loss_must_be_a_scalar_tensor(loss, match):
    def step_fn(model, batch):
        return {"loss": loss(model(batch[0]))}

    with pytest.raises(ValueError, match=match):
        train(nn.Linear(3, 1), _linear_batches(), step_fn, steps=1, device="cpu", progress=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_raises(bad):
    calls = []

    def step_fn(model, batch):
        calls.append(1)
        loss = F.mse_loss(model(batch[0]), batch[1])
        return {"loss": loss * bad if len(calls) == 3 else loss}

    model = nn.Linear(3, 1)
    with pytest.raises(FloatingPointError, match="at step 3"):
        train(model, _linear_batches(), step_fn, steps=5, device="cpu", progress=False)
    assert torch.isfinite(model.weight).all()  # the bad step was not applied


# --- progress bar -------------------------------------------------------------------------------


def test_progress_false_is_silent(capfd):
    _fit(steps=3, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_bar_goes_to_stderr(capfd):
    _fit(steps=3, progress=True, desc="fitting")
    out, err = capfd.readouterr()
    assert out == ""
    assert "fitting" in err and "3/3" in err
