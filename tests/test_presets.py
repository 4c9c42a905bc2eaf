"""Presets (``DVL_PRESET``) and ``setup``: the first cell of every notebook."""
import dataclasses
import random

import numpy as np
import pytest
import torch

from dvl_helpers import presets, startup
from dvl_helpers.presets import PRESET_NAMES, Preset, get_preset


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_env_variable_selects_preset(monkeypatch, no_cuda, name):
    monkeypatch.setenv("DVL_PRESET", name)
    cfg = get_preset()
    assert isinstance(cfg, Preset)
    assert cfg.name == name


def test_env_variable_is_case_and_space_insensitive(monkeypatch, no_cuda):
    monkeypatch.setenv("DVL_PRESET", "  Smoke ")
    assert get_preset().name == "smoke"


def test_argument_wins_over_env(monkeypatch, no_cuda):
    monkeypatch.setenv("DVL_PRESET", "gpu")
    assert get_preset("smoke").name == "smoke"


def test_default_without_cuda_is_cpu(monkeypatch, no_cuda):
    monkeypatch.delenv("DVL_PRESET", raising=False)
    cfg = get_preset()
    assert cfg.name == "cpu"
    assert cfg.device == "cpu"


def test_default_with_cuda_is_gpu(monkeypatch):
    # only the availability flag is faked: get_preset must not touch the device itself
    monkeypatch.delenv("DVL_PRESET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = get_preset()
    assert (cfg.name, cfg.device) == ("gpu", "cuda")
    assert presets.default_preset_name() == "gpu"


def test_empty_env_variable_means_default(monkeypatch, no_cuda):
    monkeypatch.setenv("DVL_PRESET", "")
    assert get_preset().name == "cpu"


def test_explicit_device(no_cuda):
    assert get_preset("gpu", device="cpu").device == "cpu"


@pytest.mark.parametrize("source", ["env", "arg"])
def test_unknown_name_lists_valid_ones(monkeypatch, no_cuda, source):
    if source == "env":
        monkeypatch.setenv("DVL_PRESET", "laptop")
        call = get_preset
    else:
        call = lambda: get_preset("laptop")  # noqa: E731
    with pytest.raises(ValueError) as err:
        call()
    msg = str(err.value)
    assert "'laptop'" in msg
    for name in PRESET_NAMES:
        assert name in msg


def test_smoke_is_small(no_cuda):
    smoke, cpu, gpu = (get_preset(n) for n in ("smoke", "cpu", "gpu"))
    # offline data, a whole notebook in under a minute on 2 cores
    assert smoke.dataset == "photos" and smoke.dataset_gray == "digits"
    assert smoke.steps <= 100
    assert smoke.batch_size <= 64
    assert smoke.hidden <= 64 and smoke.res_hidden <= 32
    assert smoke.num_res_blocks <= 2
    assert smoke.max_train_images is not None and smoke.max_train_images <= 2048
    assert smoke.eval_batches <= 2
    # sizes grow from smoke to gpu
    for field in ("steps", "hidden", "num_codes"):
        assert getattr(smoke, field) <= getattr(cpu, field) <= getattr(gpu, field), field


def test_cpu_preset_is_offline_and_gpu_uses_papers_data(no_cuda):
    assert get_preset("cpu").dataset == "photos"
    assert get_preset("cpu").dataset_gray == "digits"
    gpu = get_preset("gpu")
    assert (gpu.dataset, gpu.dataset_gray) == ("cifar10", "mnist")
    # the VQ-VAE paper's CIFAR-10 network
    assert (gpu.hidden, gpu.res_hidden, gpu.num_res_blocks) == (128, 32, 2)


def test_every_preset_is_consistent(no_cuda):
    for name in PRESET_NAMES:
        cfg = get_preset(name)
        assert cfg.image_size % 8 == 0, name
        assert cfg.batch_size > 0 and cfg.steps > 0 and cfg.lr > 0, name
        assert cfg.eval_every == 0 or cfg.eval_every <= cfg.steps, name


def test_replace_returns_changed_copy(no_cuda):
    cfg = get_preset("smoke")
    fast = cfg.replace(steps=5, lr=0.5)
    assert (fast.steps, fast.lr) == (5, 0.5)
    assert cfg == get_preset("smoke")  # the original is untouched
    assert cfg.steps != 5
    assert fast.replace() == fast
    assert dataclasses.asdict(fast) == {**dataclasses.asdict(cfg), "steps": 5, "lr": 0.5}


def test_replace_unknown_field_raises(no_cuda):
    with pytest.raises(TypeError, match="stepz"):
        get_preset("smoke").replace(stepz=5)


def test_preset_is_frozen(no_cuda):
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("smoke").steps = 1


# --- setup --------------------------------------------------------------------------


def _draws():
    return torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)]


def test_setup_seeds_reproducibly(monkeypatch, no_cuda):
    monkeypatch.setenv("DVL_PRESET", "smoke")
    startup.setup(seed=3, verbose=False)
    t1, n1, r1 = _draws()
    startup.setup(seed=3, verbose=False)
    t2, n2, r2 = _draws()
    assert torch.equal(t1, t2)
    np.testing.assert_array_equal(n1, n2)
    assert r1 == r2
    startup.setup(seed=4, verbose=False)
    t3, n3, r3 = _draws()
    assert not torch.equal(t1, t3)
    assert not np.array_equal(n1, n3)
    assert r1 != r3


def test_setup_prints_one_line_and_returns_preset(monkeypatch, capsys, no_cuda):
    monkeypatch.setenv("DVL_PRESET", "smoke")
    cfg = startup.setup(seed=0)
    out, err = capsys.readouterr()
    assert cfg == get_preset("smoke")
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1, out
    line = lines[0]
    assert "cpu" in line
    assert "smoke" in line
    assert torch.__version__ in line


def test_setup_preset_argument_and_quiet(monkeypatch, capsys, no_cuda):
    monkeypatch.setenv("DVL_PRESET", "smoke")
    cfg = startup.setup(seed=0, preset="cpu", verbose=False)
    assert cfg.name == "cpu"
    assert capsys.readouterr().out == ""


def test_setup_unknown_preset_raises(monkeypatch, no_cuda):
    monkeypatch.setenv("DVL_PRESET", "huge")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        startup.setup()


def test_package_exports_setup():
    import dvl_helpers as dvl

    assert dvl.setup is startup.setup
    assert dvl.get_preset is get_preset
