"""The examples run and get the book's answers."""

import importlib.util
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(relative_path):
    spec = importlib.util.spec_from_file_location(os.path.basename(relative_path)[:-3],
                                                  os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_d2l_tour_passes_every_check(capsys):
    state = torch.random.get_rng_state()
    assert load("examples/d2l_tour.py").main() == 0
    assert torch.equal(torch.random.get_rng_state(), state)
    output = capsys.readouterr().out
    assert "MISMATCH" not in output
    assert "[19 25]" in output.replace("  ", " ")
