"""benchmarks/configs.py's network specs ("64-128-10:32"), which compare.py takes beside its named configurations."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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
