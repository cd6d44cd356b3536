"""The benchmark report (xentc/bench.py): its peers compute the right thing, its arithmetic and
its outputs. No timing is asserted: speed lives in the report, not in tests."""

import argparse
import json

import numpy as np
import pytest

import xentc
from xentc import bench


def test_parse_workload():
    assert bench.parse_workload("64,1000") == bench.Workload(64, 1000, "float32")
    assert bench.parse_workload("8,10,float64") == bench.Workload(8, 10, "float64")
    for bad in ("64", "64,0", "1,2,float16", "a,b"):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            bench.parse_workload(bad)


def test_quick_keeps_classes_and_dtype_and_shrinks_rows():
    for w in bench.STANDARD_WORKLOADS:
        q = bench.quick(w)
        assert (q.n_classes, q.dtype) == (w.n_classes, w.dtype)
        assert 8 <= q.n_rows <= w.n_rows
        assert q.n_rows * q.n_classes <= max(bench.QUICK_ELEMENTS, 8 * w.n_classes)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_peer_matches_xentc(dtype):
    logits, target = bench.make_inputs(bench.Workload(37, 301, dtype))
    loss, grad = xentc.cross_entropy_with_grad(logits, target)
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert bench.numpy_forward(logits, target) == pytest.approx(loss, rel=tol)
    np_loss, np_grad = bench.numpy_loss_and_grad(logits.copy(), target)
    assert np_loss == pytest.approx(loss, rel=tol)
    np.testing.assert_allclose(
        np_grad * len(target),
        grad * len(target),
        atol=10 * tol,
        err_msg=f"numpy peer gradient, {dtype}",
    )


def test_loss_check_flags_a_mismatch():
    assert bench.loss_check(1.0, 1.0 + 1e-6, "float32") == "ok"
    assert bench.loss_check(1.0, 1.01, "float32").startswith("MISMATCH")
    assert bench.loss_check(1.0, 1.0 + 1e-9, "float64").startswith("MISMATCH")


def test_report_end_to_end(tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{bench.README_BEGIN}\nold figures\n{bench.README_END}\n\nafter\n")
    rc = bench.main(
        [
            "--only",
            "--workload",
            "64,100",
            "--workload",
            "16,1000,float64",
            "--peers",
            "numpy",
            "--repeats",
            "3",
            "--threads",
            "1",
            "--json",
            str(out_json),
            "--markdown",
            str(out_md),
            "--no-torch-step",
            "--readme",
            str(readme),
        ]
    )
    assert rc == 0
    summary = readme.read_text()
    assert "old figures" not in summary and summary.endswith(f"{bench.README_END}\n\nafter\n")
    assert (
        "| logits (N, C) | xentc forward | xentc loss + grad, `out=` | NumPy loss + grad |"
        in summary
    )
    assert "| (64, 100) | " in summary and "| (16, 1000) float64 | " in summary
    text = capsys.readouterr().out
    assert "bandwidth at 1 threads" in text and "N=64 C=100 f32" in text
    report = json.loads(out_json.read_text())
    assert report["machine"]["threads"] == 1 and report["machine"]["xentc"] == xentc.__version__
    assert report["bandwidth"]["read_gbs"] > 0 and report["bandwidth"]["copy_gbs"] > 0
    impls = {(r["workload"], r["pass_name"], r["impl"]) for r in report["rows"]}
    for label in ("N=64 C=100 f32", "N=16 C=1000 f64"):
        assert {
            (label, "forward", "xentc"),
            (label, "forward", "numpy"),
            (label, "loss+grad", "xentc"),
            (label, "loss+grad", "xentc out="),
            (label, "loss+grad", "numpy"),
        } <= impls
    for r in report["rows"]:
        assert r["loss_check"] == "ok", r
        assert r["median_ms"] > 0 and r["bandwidth_fraction"] > 0
        assert r["gbs"] == pytest.approx(
            r["n_rows"]
            * r["n_classes"]
            * (4 if r["dtype"] == "float32" else 8)
            * (1 if r["pass_name"] == "forward" else 2)
            / r["median_ms"]
            / 1e6,
            rel=1e-9,
        )
    for r in report["rows"]:
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"], r
    markdown = out_md.read_text()
    assert markdown.startswith(f"xentc {xentc.__version__}, `python -m xentc.bench --only")
    assert "--markdown" not in markdown.splitlines()[0]
    assert "\n| workload | pass | impl | median ms | range ms |" in markdown
    assert report["other_processes"]["wall_s"] > 0


def test_plot_without_matplotlib_fails_before_the_run(monkeypatch, capsys):
    monkeypatch.setattr(bench, "_importable", lambda module: module != "matplotlib")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran although --plot cannot be written")

    monkeypatch.setattr(bench, "measure_bandwidth", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", "--plot", "out.png"])
    assert exit_info.value.code == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_quick_bandwidth_probe_is_small():
    bandwidth = bench.measure_bandwidth(1, 3, quick=True)
    assert bandwidth["array_bytes"] <= bench.QUICK_PROBE_BYTES
    assert bandwidth["read_gbs"] > 0 and bandwidth["copy_gbs"] > 0


def test_other_processes_cpu_is_seen_and_warned_about():
    import subprocess
    import sys
    import time

    watch = bench.CpuWatch()
    # a busy process this one does not wait for before stop(): another process's work
    spin = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass",
        ]
    )
    time.sleep(1.5)
    result = watch.stop()
    spin.wait()
    if result["other_cpu_s"] is None:
        pytest.skip("no /proc/stat on this system")
    assert result["other_cpu_s"] >= 0.7, result
    warning = bench.contention_warning(result, n_cpus=2)
    assert warning.startswith("warning: other processes used") and "of 2 cores" in warning
    assert (
        bench.contention_warning({"wall_s": 10.0, "other_cpu_s": 0.1, "other_cores": 0.01}) is None
    )
    assert (
        bench.contention_warning({"wall_s": 1.0, "other_cpu_s": None, "other_cores": None}) is None
    )


def test_unknown_peer_is_an_error(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--peers", "numpy,tensorflow"])
    assert "tensorflow" in capsys.readouterr().err


def test_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (optional)")
    path = tmp_path / "bench.png"
    bench.main(
        [
            "--only",
            "--workload",
            "32,100",
            "--peers",
            "numpy",
            "--repeats",
            "3",
            "--plot",
            str(path),
            "--no-torch-step",
        ]
    )
    assert path.stat().st_size > 1000


def test_torch_step_section():
    # Each case in its own interpreter: three small ones, losses checked against torch's.
    pytest.importorskip("torch", reason="the torch training step section needs torch")
    rows = bench.torch_step_rows(bench.Workload(16, 1000), n_threads=1, repeats=3)
    assert [r.impl for r in rows[:3]] == [label for label, _, _ in bench.TORCH_STEP_IMPLS]
    for r in rows:
        assert r.loss_check == "ok", r
        assert r.median_ms > 0 and r.extra_mib is not None and r.extra_mib >= 0
    assert bench.format_torch_step(rows, markdown=True).startswith("| workload |")
    text = bench.format_torch_step(rows)
    assert "xentc.torch inplace_backward" in text and "vs torch" in text


def test_torch_step_section_can_be_left_out(capsys):
    bench.main(
        ["--only", "--workload", "16,100", "--peers", "numpy", "--repeats", "3", "--no-torch-step"]
    )
    assert "skipped: --no-torch-step" in capsys.readouterr().out


def test_readme_without_the_summary_block_fails_before_the_run(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no block here\n")
    monkeypatch.setattr(bench, "measure_bandwidth", lambda *a, **k: pytest.fail("it ran"))
    with pytest.raises(ValueError, match="no '<!-- benchmark summary"):
        bench.main(["--quick", "--readme", str(readme)])


def test_the_readme_holds_the_summary_block():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert bench.replace_readme_summary(text, "x\n").count("x\n<!-- end of benchmark") == 1


# ---- the fused linear + cross-entropy section (python -m xentc.bench --linear) ------------------


def test_linear_section_quick(monkeypatch, tmp_path, capsys):
    from xentc import _bench_linear

    pytest.importorskip("ml_dtypes", reason="the bfloat16 rows need ml_dtypes")
    # One tiny workload: the contenders, the float64 reference and the columns, not the speed.
    monkeypatch.setattr(_bench_linear, "QUICK_WORKLOADS", [(48, 8, 300)])
    out_json = tmp_path / "linear.json"
    rc = bench.main(
        ["--linear", "--quick", "--threads", "1", "--repeats", "1", "--json", str(out_json)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "linear cross-entropy benchmark" in text and "np.matmul: 3 products" in text
    rows = json.loads(out_json.read_text())["linear"]
    torch_missing = _bench_linear.torch_missing()
    by_key = {(r["dtype"], r["pass_name"], r["impl"]): r for r in rows}
    for dtype in ("float32", "bfloat16"):
        for pass_name in ("loss", "loss+grads"):
            for impl in _bench_linear.CONTENDERS:
                r = by_key[(dtype, pass_name, impl)]
                if impl.startswith("torch") and torch_missing:
                    assert r["skipped"] == torch_missing
                    continue
                assert r["skipped"] is None and r["calls"] == 1 and r["median_ms"] > 0, r
                # xentc computes 16-bit operands in float32; torch's bfloat16 logits are bfloat16
                bound = 1e-5 if dtype == "float32" or not impl.startswith("torch") else 3e-2
                assert r["loss_err"] < bound, r
                if pass_name == "loss+grads":
                    assert r["grad_err"] < (1e-4 if dtype == "float32" else 3e-2), r
                else:
                    assert r["grad_err"] is None


def test_linear_section_reference_matches_xentc_float64():
    from xentc import _bench_linear

    h, w, t = _bench_linear.make_inputs(37, 5, 301)
    h, w = h.astype(np.float64), w.astype(np.float64)
    loss, dh, dw = _bench_linear.reference(h, w, t)
    want, gh, gw, _ = xentc.linear_cross_entropy_with_grad(h, w, t)
    assert loss == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(dh, gh[: len(dh)], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(dw, gw[: len(dw)], rtol=1e-10, atol=1e-15)


def test_linear_section_says_why_a_contender_is_skipped(monkeypatch):
    from xentc import _bench_linear

    monkeypatch.setattr(_bench_linear, "torch_missing", lambda: "torch is not installed (test)")
    rows = _bench_linear.run([(16, 4, 50)], ["float32"], 1, 1)
    skipped = [r for r in rows if r.skipped]
    assert {r.impl for r in skipped} == {"torch unfused", "torch reference", "torch chunked"}
    assert all(r.skipped == "torch is not installed (test)" for r in skipped)
    text = _bench_linear.format_table(rows)
    assert "skipped: torch is not installed (test)" in text
    assert _bench_linear.format_table(rows, markdown=True).startswith("| workload | dtype |")
    # a cap on the estimated length of a call skips, saying why
    rows = _bench_linear.run([(16, 4, 50)], ["float32"], 1, 1, max_call_s=1e-12)
    capped = [r for r in rows if r.impl in ("xentc", "numpy+xentc unfused")]
    assert len(capped) == 4 and all("> --linear-max-call-s 1e-12" in r.skipped for r in capped)
