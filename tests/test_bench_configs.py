"""benchmarks/configs.py's network specs ("64-128-10:32"), which compare.py takes beside its named configurations."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.configs import CONFIGS, SPEC_EPOCH_FLOPS, SPEC_SAMPLES, SWEEP, config_named  # noqa: E402


def test_a_named_configuration_is_returned_as_it_is():
    assert config_named("mnist") is CONFIGS["mnist"]


def test_a_spec_gives_its_layers_batch_and_an_epoch_of_bounded_flops():
    config = config_named("784-128-10:16")
    assert config.layers == (784, 128, 10) and config.batch_size == 16
    assert config.n_samples == round(SPEC_EPOCH_FLOPS / (6 * (784 * 128 + 128 * 10)))
    assert config_named("16-16-2:16").n_samples == SPEC_SAMPLES[1]  # tiny: capped
    assert config_named("4096-4096-10:64").n_samples == SPEC_SAMPLES[0]  # huge: floored
    assert config_named("4096-4096-10:8192").n_samples == 2 * 8192  # at least two batches


@pytest.mark.parametrize("spec", ["64-10", "64-10:", "64:32", "64-x-10:32", "64-0-10:32", "64-32-10:0", "tiny"])
def test_a_malformed_spec_is_refused_with_the_expected_form(spec):
    with pytest.raises(ValueError, match="inputs-hidden...-classes:batch"):
        config_named(spec)


def test_the_sweep_stays_within_the_range_issue_12_names():
    for spec in SWEEP:
        config = config_named(spec)
        assert 2 <= len(config.layers) - 1 <= 5
        assert 16 <= config.batch_size <= 512
        assert max(config.layers[1:-1]) <= 1024


def test_asv_follows_each_sweep_network_on_a_tenth_of_its_epoch():
    from benchmarks.bench_training import SWEEP_FRACTION, SweepEpoch, sweep_config

    assert SweepEpoch.params == [list(SWEEP)]
    full, small = config_named("784-128-10:16"), sweep_config("784-128-10:16")
    assert (small.layers, small.batch_size) == (full.layers, full.batch_size)
    assert small.asv_samples == full.n_samples // SWEEP_FRACTION
    assert sweep_config("1024-1024-10:128").asv_samples == 8 * 128  # at least 8 batches
    bench = SweepEpoch()
    bench.setup("16-16-2:16")
    assert len(bench.X) == sweep_config("16-16-2:16").asv_samples
    assert bench.track_allocations_per_step("16-16-2:16") == 0
    assert bench.track_samples_per_second("16-16-2:16") > 0


def test_compare_pools_alternating_rounds_and_gives_each_rounds_ratio():
    from benchmarks.compare import pooled, round_ratios

    def run(*seconds):
        return {"seconds": sorted(seconds)[len(seconds) // 2], "all_seconds": list(seconds), "n_samples": 1000,
                "loss": 0.5}

    fast = pooled([run(1.0, 3.0, 2.0), run(4.0, 5.0, 6.0)], "784-128-10:16")
    assert fast["all_seconds"] == [1.0, 3.0, 2.0, 4.0, 5.0, 6.0] and fast["round_seconds"] == [2.0, 5.0]
    assert fast["seconds"] == 3.5 and fast["samples_per_second"] == 1000 / 3.5
    slow = pooled([run(4.0), run(5.0)], "784-128-10:16")
    assert round_ratios({"fastbp": fast, "jax": slow}) == {"jax": [2.0, 1.0]}
    skipped = {"skipped": "JAX not available"}
    assert pooled([run(1.0), skipped], "784-128-10:16") is skipped
    assert round_ratios({"fastbp": fast, "jax": skipped}) == {}


@pytest.mark.parametrize("spec", ["16-16-2:16", "small", "mnist", "1024-1024-10:128"])
def test_profile_step_times_whole_epochs_over_the_configurations_own_samples(spec):
    # profile_step once made one epoch of as many samples as its step count needed: 890 MB for
    # 16-16-2:16, whose batches then came from DRAM and read as the loop's overhead.
    from benchmarks.profile_step import timed_epochs

    config = config_named(spec)
    epochs, n_steps = timed_epochs(config)
    per_epoch = -(-config.n_samples // config.batch_size)
    assert n_steps == epochs * per_epoch >= 20
    assert n_steps * 6 * config.batch_size * config.n_weights >= 4e9 or epochs == 1
    assert epochs == 1 or (epochs - 1) * per_epoch * 6 * config.batch_size * config.n_weights < 4e9


def test_real_flops_leave_out_the_first_layers_input_gradient_alone():
    config = config_named("64-32-10:16")
    forward = 2 * (64 * 32 + 32 * 10)
    weight_grads = 2 * (64 * 32 + 32 * 10)
    input_grads = 2 * (32 * 10)  # the second layer's dx only
    assert config.real_epoch_flops(1) == forward + weight_grads + input_grads == 10_112
    assert config.real_epoch_flops(3) == 3 * 10_112
    assert config.epoch_flops(1) - config.real_epoch_flops(1) == 2 * 64 * 32
    mnist = CONFIGS["mnist"]
    assert mnist.real_epoch_flops() == mnist.n_samples * (6 * (784 * 512 + 512 * 256 + 256 * 10) - 2 * 784 * 512)


@pytest.mark.parametrize("width", [8, 16])
def test_the_fma_peak_is_a_positive_rate_from_fmas_of_the_requested_width(width):
    from benchmarks import peak

    gflops = peak.fma_gflops(width, seconds=0.002, repeats=1)
    assert np.isfinite(gflops) and gflops > 0
    ir = peak.fma_kernel_ir(width)
    # Every FMA of the loop is at the requested width, and there are CHAINS x UNROLL of them.
    assert f"@llvm.fma.v{width}f32" in ir
    assert ir.count(f"call <{width} x float> @llvm.fma.v{width}f32") >= peak.CHAINS * peak.UNROLL
    assert "@llvm.fma.v" not in ir.replace(f"@llvm.fma.v{width}f32", "")
    assert peak.flops_per_trip(width) == 2 * peak.CHAINS * peak.UNROLL * width


def test_the_fma_peak_defaults_to_fastbps_vector_width_and_refuses_others():
    from benchmarks import peak
    from fastbp.kernels.cpu._simd import WIDTH

    assert peak.default_width() == (WIDTH or 4)
    assert f"@llvm.fma.v{peak.default_width()}f32" in peak.fma_kernel_ir()
    with pytest.raises(ValueError, match="width must be one of"):
        peak.fma_gflops(12)


def test_the_measured_clock_is_a_positive_frequency():
    import platform

    from benchmarks import peak

    ghz = peak.clock_ghz(seconds=0.002, repeats=1)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert ghz is None
    else:
        assert np.isfinite(ghz) and 0.1 < ghz < 20  # cycles per ns: any CPU of this century


def test_the_sgemm_peak_is_a_positive_rate():
    from benchmarks import peak

    gflops = peak.sgemm_gflops(64, repeats=1)
    assert np.isfinite(gflops) and gflops > 0


def _report_meta(**extra):
    meta = {"date": "2026-12-01T10:00", "cpu": "Some CPU", "cpu_flags": ["avx2", "fma", "avx512f"], "threads": 1,
            "load_start": "0.10", "load_end": "0.20", "versions": {"numpy": "2"}, "samples_scale": 1.0,
            "repeats": 1, "rounds": 1, "sgemm_size": 64, "clock": "wall", "blas": ["openblas kernel Zen"],
            "sgemm_gflops": 100.0, "fma_peak_gflops": 50.0, "fma_width": 16, "clock_ghz": 2.5}
    meta.update(extra)
    return meta


def test_compare_reports_real_gflops_against_both_peaks(tmp_path):
    from benchmarks.compare import pooled, write_report

    run = {"seconds": 1.0, "all_seconds": [1.0], "n_samples": 1000, "loss": 0.5, "dtype": "float32",
           "peak_mb": 100.0, "fit_mb": 10.0}
    r = pooled([run], "small")
    small = CONFIGS["small"]
    assert r["gflops"] == small.epoch_flops(1000) / 1e9
    assert r["real_gflops"] == small.real_epoch_flops(1000) / 1e9
    r["real_gflops"], r["gflops"] = 10.0, 14.0  # round figures for the percentages below
    text = write_report(tmp_path, _report_meta(), {"small": {"fastbp": r}}, {}, None, [])
    assert "vector flags: avx2 fma avx512f" in text
    assert "FMA peak (one core, float32, 16-wide llvm.fma, 12 chains" in text
    assert "50.0 GFLOP/s = 20.0 flops per cycle at 2.50 GHz" in text
    header = next(line for line in text.splitlines() if line.startswith("| config |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in text.splitlines() if line.startswith("| small |"))
    values = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
    assert values["GFLOP/s"] == "14.0" and values["real GFLOP/s"] == "10.0"
    assert values["% SGEMM peak"] == "10%"  # 10 of 100
    assert values["% FMA peak"] == "20%"  # 10 of 50 x 1 thread
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["meta"]["fma_peak_gflops"] == 50.0 and saved["results"]["small"]["fastbp"]["real_gflops"] == 10.0


def test_compare_says_when_the_fma_peak_was_not_measured(tmp_path):
    from benchmarks.compare import write_report

    text = write_report(tmp_path, _report_meta(fma_peak_gflops=None, fma_peak_skipped="failed: no LLVM"), {}, {},
                        None, [])
    assert "FMA peak: not measured (failed: no LLVM)" in text


def test_compare_quick_run_measures_both_peaks_and_reports_the_new_columns(tmp_path):
    # The smallest whole run: one tiny network, the NumPy peer (nothing of fastbp's to compile
    # in the children but the micro-kernel), a small product.
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--configs", "16-16-2:16",
                           "--peers", "numpy", "--repeats", "1", "--samples-scale", "0.01", "--threads", "1",
                           "--no-threads", "--no-startup", "--sgemm-size", "128", "--out-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "compare.json").read_text())
    meta, numpy_run = saved["meta"], saved["results"]["16-16-2:16"]["numpy"]
    for key in ("sgemm_gflops", "fma_peak_gflops", "clock_ghz"):
        assert meta[key] > 0, key
    assert meta["fma_width"] in (4, 8, 16) and isinstance(meta["cpu_flags"], list)
    assert 0 < numpy_run["real_gflops"] < numpy_run["gflops"]
    text = (tmp_path / "compare.md").read_text()
    assert "| real GFLOP/s | % SGEMM peak | % FMA peak |" in text and "- FMA peak (one core" in text


def test_compare_holds_each_kind_of_network_to_its_speed_targets(tmp_path):
    from benchmarks.compare import pooled, write_report

    def run(config, samples_per_second):
        r = pooled([{"seconds": 1.0, "all_seconds": [1.0], "n_samples": 1000, "loss": 0.5, "dtype": "float32",
                     "peak_mb": 100.0, "fit_mb": 10.0}], config)
        r["samples_per_second"] = samples_per_second
        return r

    small, mnist = run("small", 3e6), run("mnist", 5e4)
    small["real_gflops"], mnist["real_gflops"] = 30.0, 90.0
    results = {"small": {"fastbp": small, "jax": run("small", 1e6), "numpy": run("small", 4e6)},
               "mnist": {"fastbp": mnist, "jax": run("mnist", 4e4), "torch": run("mnist", 6e4)}}
    text = write_report(tmp_path, _report_meta(fma_peak_gflops=50.0, sgemm_gflops=100.0, threads=2), results, {},
                        None, [])
    targets = {}
    for line in text.split("Targets:")[1].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("target", "---"):
            targets[cells[0]] = (cells[1], cells[2])
    # A narrow network: half of one core's FMA peak, whatever the threads, and 3x JAX.
    assert targets["small: fastbp.Sequential >= 50% of one core's FMA peak (real flops)"] == (
        "60% (30.0 of 50.0 GFLOP/s)", "yes")
    assert targets["small: fastbp.Sequential >= 3x JAX (CPU, jit + scan)"] == ("3x", "yes")
    assert targets["small: fastbp.Sequential >= 1x NumPy (hand-written)"][1] == "no"
    # A BLAS-bound one: 85% of the SGEMM peak in real flops, and no slower than each peer.
    assert targets["mnist: fastbp.Sequential >= 85% of the SGEMM peak (real flops)"] == (
        "90% (90.0 of 100.0 GFLOP/s)", "yes")
    assert targets["mnist: fastbp.Sequential >= 1x JAX (CPU, jit + scan)"][1] == "yes"
    assert targets["mnist: fastbp.Sequential >= 1x PyTorch (CPU)"][1] == "no"
    assert not any("mnist" in t and "FMA peak" in t for t in targets)
