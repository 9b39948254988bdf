"""The examples run and get their answers: the book's numbers, Waldo's location, LeNet learning, DDP parity."""

import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

import torchcorr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


@pytest.fixture(autouse=True)
def one_thread():
    """Run each example on one thread. On a busy 2-core machine, two OpenMP threads competing with other
    jobs made a LeNet epoch 20 times slower than one thread did."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def load(monkeypatch):
    """Import examples/NAME.py afresh, with examples/ on sys.path as when it runs as a script.

    The module is registered in sys.modules for the test, so that pickle (multiprocessing) finds it.
    """
    monkeypatch.syspath_prepend(EXAMPLES)

    def load_example(name):
        spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load_example


def test_d2l_tour_passes_every_check(load, capsys):
    state = torch.random.get_rng_state()
    assert load("d2l_tour").main() == 0
    assert torch.equal(torch.random.get_rng_state(), state)
    output = capsys.readouterr().out
    assert "MISMATCH" not in output
    assert "[19 25]" in output.replace("  ", " ")


def test_waldo_ncc_matches_opencv(load):
    import cv2

    waldo = load("waldo")
    generator = np.random.default_rng(0)
    image = generator.random((40, 50))
    template = image[12:19, 30:35].copy()  # an exact copy: score 1 there
    scores = waldo.ncc_map(torch.from_numpy(image), torch.from_numpy(template))
    expected = cv2.matchTemplate(image.astype(np.float32), template.astype(np.float32), cv2.TM_CCOEFF_NORMED)
    assert scores.shape == expected.shape == (34, 46)
    np.testing.assert_allclose(scores.numpy(), expected, atol=1e-4)
    assert waldo.best_match(scores)[:2] == (12, 30)
    assert waldo.best_match(scores)[2] == pytest.approx(1.0, abs=1e-12)


def test_waldo_is_found_where_he_was_hidden(load, tmp_path, capsys):
    hide_at = (40, 300)  # in the sky this time, with different noise
    assert load("waldo").main(hide_at=hide_at, seed=1, repeats=1, output_dir=str(tmp_path)) == 0
    output = capsys.readouterr().out
    assert "found at (40, 300), expected (40, 300) (off by 0 px)" in output
    assert "OpenCV matchTemplate (TM_CCOEFF_NORMED, float32): found at (40, 300)" in output
    assert (tmp_path / "waldo.png").stat().st_size > 10_000


def test_lenet_learns_in_one_epoch(load, tmp_path, capsys):
    state = torch.random.get_rng_state()
    # One epoch: held-out loss falls for both models and torchcorr's reaches 30% (chance: 10%).
    assert load("lenet").main(epochs=1, target=0.3, output_dir=str(tmp_path), progress=False) == 0
    assert torch.equal(torch.random.get_rng_state(), state)
    output = capsys.readouterr().out
    assert "torchcorr LeNet reached the target accuracy 30%" in output
    assert (tmp_path / "lenet.png").stat().st_size > 10_000


def test_lenet_models_start_from_the_same_weights(load):
    lenet = load("lenet")
    with torch.random.fork_rng(devices=[]):
        torch_model = lenet.init_weights(lenet.lenet())
    ours = torchcorr.convert(torch_model)
    x = lenet.load_digits_28()[2][:8]
    torch.testing.assert_close(ours(x), torch_model(x), rtol=1e-5, atol=1e-5)
    assert type(ours[0]).__name__ == "Corr2d" and type(torch_model[0]).__name__ == "Conv2d"


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch built without gloo")
def test_ddp_matches_a_single_process(load, capsys):
    assert load("ddp_lenet").main(steps=2, batch_size=32) == 0
    output = capsys.readouterr().out
    assert "DDP matches the single-process run" in output


def test_per_sample_gradients_match_a_loop(load, capsys):
    """vmap(grad(...)) through torchcorr equals one backward pass per image and nn.Conv2d's per-sample gradients."""
    assert load("per_sample_grads").main(["--batch-size", "8", "--min-run-time", "0.05"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 2 and "FAIL" not in out
