"""scripts/bench_gpu.py, the benchmark a session with a GPU runs, at its tiny size: it runs, and what it compares agrees."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(out, *extra) -> None:
    import os

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--size", "tiny", "--out",
                           str(out), *extra], capture_output=True, text=True, timeout=600, cwd=ROOT / "scripts",
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_gpu_benchmark_runs_and_its_products_and_scans_agree(tmp_path):
    bench(tmp_path)
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert [r["model"] for r in report["hvp"]] == ["ResNet-8", "tiny-gpt"]
    for row in report["hvp"]:  # every product, on each of its paths, against the hand-written double backward
        assert {"HVP (landscape, cached)", "HVP (landscape, rev-rev)", "HVP (landscape, fwd-rev)"} <= set(
            row["relative difference"])
        assert all(v < 1e-5 for v in row["relative difference"].values()), row["relative difference"]
    rows = report["scan"]["rows"]
    assert set(rows) == {"landscape scan (loop)", "landscape scan (loop, channels_last)", "landscape scan (batched)",
                         "plain torch loop", "plain + channels_last", "plain + TF32", "plain + batches of 64"}
    assert all(r["max rel. difference from float64"] < 1e-5 for r in rows.values())  # float32 against float64
    profiled = report["profile"]  # where the time goes: operations by self time, their shares of the product's
    for product in ("gradient", "HVP (landscape, cached)"):
        top = profiled[product]["top"]
        assert 0 < sum(op["share"] for op in top) <= 1 + 1e-9 and top[0]["ms"] >= top[-1]["ms"]
        assert any("convolution" in op["op"] for op in top)
    assert "aten::convolution_backward" in (tmp_path / "bench_gpu-profile-ResNet-8.txt").read_text()
    table = (tmp_path / "bench_gpu.md").read_text()
    assert "| ResNet-8 | 78,042 | 16 (2) |" in table and "| plain torch loop |" in table


def test_the_autotuned_run_repeats_the_larger_resnet_and_the_loops(tmp_path):
    bench(tmp_path, "--autotune")
    report = json.loads((tmp_path / "bench_gpu_autotuned.json").read_text())
    assert report["autotune"] is True and [r["model"] for r in report["hvp"]] == ["ResNet-8"]
    assert all(v < 1e-5 for v in report["hvp"][0]["relative difference"].values())
    rows = report["scan"]["rows"]
    assert set(rows) == {"landscape scan (loop)", "landscape scan (loop, channels_last)", "plain torch loop",
                         "plain + channels_last", "plain + TF32"}
    assert all(r["max rel. difference from float64"] < 1e-5 for r in rows.values())
    assert "cuDNN autotuning on" in (tmp_path / "bench_gpu_autotuned.md").read_text()
    assert (tmp_path / "bench_gpu_autotuned-profile-ResNet-8.txt").exists()
    assert not (tmp_path / "bench_gpu.json").exists()  # the untuned run's files are left alone
