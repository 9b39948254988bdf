"""The CPU benchmark runs end to end on a tiny shape, and refuses to time a wrong result."""

import importlib.util
import json
import os

import pytest
import torch

import torchcorr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")

pytestmark = pytest.mark.skipif(not torchcorr.native_available("cpu"), reason="no native CPU kernels")


@pytest.fixture
def bench_cpu(monkeypatch):
    """bench/bench_cpu.py as a module, its suite replaced by one tiny single-channel shape (peers included)."""
    monkeypatch.syspath_prepend(BENCH)  # for bench/plot.py
    spec = importlib.util.spec_from_file_location("bench_cpu", os.path.join(BENCH, "bench_cpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SHAPES", [module.Shape("single_24_k3", "weak", 1, 1, 24, 24, 1, (3, 3),
                                                        padding=1, suite="baseline")])
    return module


def run(bench_cpu, tmp_path):
    bench_cpu.main(["--shapes", "single_24_k3", "--min-run-time", "0.01", "--default-malloc",
                    "--out", str(tmp_path / "cpu.json"), "--plot", str(tmp_path / "cpu.png")])


def test_report_has_timings_peers_and_verdicts(bench_cpu, tmp_path, capsys):
    threads = torch.get_num_threads()
    run(bench_cpu, tmp_path)
    assert torch.get_num_threads() == threads
    with open(tmp_path / "cpu.json") as f:
        report = json.load(f)
    assert {"cpu", "threads", "torch", "cpu_isa", "date", "opencv_threads"} <= report["machine"].keys()
    (row,) = report["rows"]
    for key in ("torch fwd ms", "torchcorr fwd ms", "torch fwd+bwd ms", "torchcorr fwd+bwd ms",
                "speedup fwd", "speedup fwd+bwd", "opencv fwd ms", "scipy fwd ms", "torchcorr/opencv fwd"):
        assert row[key] > 0, key
    assert [s["suite"] for s in report["speedup_stats"]] == ["all"]
    targets = {t["target"]: t for t in report["targets"]}
    assert len(targets) == 4  # the three weak targets and the OpenCV one; no dense shape ran
    assert all(isinstance(t["pass"], bool) for t in targets.values())
    assert os.path.getsize(tmp_path / "cpu.png") > 0
    assert "single_24_k3: torchcorr fwd <= 1.5x cv2.filter2D" in capsys.readouterr().out


def test_wrong_result_aborts_before_timing(bench_cpu, tmp_path, monkeypatch):
    monkeypatch.setitem(bench_cpu.LIBRARIES, "torchcorr", lambda *args: torchcorr.corr2d(*args) + 1)
    with pytest.raises(SystemExit, match="ABORT: torchcorr output differs"):
        run(bench_cpu, tmp_path)
    assert not (tmp_path / "cpu.json").exists()


def test_wrong_peer_aborts(bench_cpu, tmp_path, monkeypatch):
    monkeypatch.setitem(bench_cpu.PEERS, "opencv", lambda image, kernel, bias: image)
    with pytest.raises(SystemExit, match="ABORT: opencv output differs"):
        run(bench_cpu, tmp_path)


def test_plot_redraws_the_chart_from_the_json(bench_cpu, tmp_path):
    import subprocess
    import sys

    run(bench_cpu, tmp_path)
    out = tmp_path / "again.png"
    subprocess.run([sys.executable, os.path.join(BENCH, "plot.py"), str(tmp_path / "cpu.json"), "--out", str(out)],
                   check=True, capture_output=True)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def bench_models(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)  # bench_models imports its helpers from bench_cpu
    spec = importlib.util.spec_from_file_location("bench_models", os.path.join(BENCH, "bench_models.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_models(bench_models, tmp_path):
    return bench_models.main(["--models", "squeezenet1_1", "--batch", "1", "--size", "64", "--parity-batch", "1",
                              "--min-run-time", "0.01", "--layer-min-run-time", "0.01",
                              "--out", str(tmp_path / "models.json"), "--plot", str(tmp_path / "models.png")])


def test_model_benchmark_checks_parity_then_times_models_and_layer_classes(bench_models, tmp_path):
    report = run_models(bench_models, tmp_path)
    (row,) = report["models"]
    assert row["model"] == "squeezenet1_1" and row["parity error"] < 1e-8
    for key in ("torch inference ms", "torchcorr inference ms", "torch training ms", "torchcorr training ms",
                "speedup inference", "speedup training"):
        assert row[key] > 0, key
    classes = {c["class"]: c for c in report["layer classes"]}
    model = bench_models.build("squeezenet1_1", torch.contiguous_format)[0]
    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())  # each called once
    assert classes["all convolutions"]["calls"] == convolutions
    assert sum(c["calls"] for name, c in classes.items() if name != "all convolutions") == convolutions
    assert {"pointwise 1x1", "dense 3x3", "stem (3 input channels)"} <= classes.keys()
    with open(tmp_path / "models.json") as f:
        assert json.load(f)["models"][0]["model"] == "squeezenet1_1"
    with open(tmp_path / "models.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_model_benchmark_times_steps_under_autocast_and_checks_parity_in_float64(bench_models, tmp_path,
                                                                                 monkeypatch):
    dtypes = set()
    real = torchcorr.nn.Corr2d.forward

    def recording(self, x):
        y = real(self, x)
        dtypes.add(y.dtype)
        return y

    monkeypatch.setattr(torchcorr.nn.Corr2d, "forward", recording)
    report = bench_models.main(["--models", "squeezenet1_1", "--batch", "1", "--size", "64", "--parity-batch", "1",
                                "--min-run-time", "0.01", "--no-layers", "--autocast", "bfloat16",
                                "--out", str(tmp_path / "models.json"), "--plot", str(tmp_path / "models.png")])
    assert report["device"] == "cpu" and report["precision"] == "bfloat16"
    assert dtypes == {torch.float64, torch.bfloat16}  # the parity check, then the timed steps
    (row,) = report["models"]
    assert row["parity error"] < 1e-8 and row["speedup training"] > 0 and row["speedup inference"] > 0


def test_model_that_computes_differently_aborts_before_timing(bench_models, tmp_path, monkeypatch):
    real = torchcorr.nn.Corr2d.forward
    monkeypatch.setattr(torchcorr.nn.Corr2d, "forward", lambda self, x: real(self, x) * 1.001)
    with pytest.raises(SystemExit, match="ABORT: squeezenet1_1: output differs"):
        run_models(bench_models, tmp_path)
    assert not (tmp_path / "models.json").exists()
