"""asv: one training epoch of fastbp.Sequential per configuration, its throughput, peak memory
and the numba allocations per training step.

Epochs here have Config.asv_samples samples (layer and batch sizes as in the full
configuration) so that a benchmark stays within a few seconds; compare.py runs the full ones.
setup runs one epoch first, so compiling (or loading numba's cache) is never timed.
"""
import dataclasses
import statistics
import time

from .configs import CONFIGS, SWEEP, allocations_per_step, build_fastbp, config_named, fit_epoch, make_data

# SweepEpoch's epochs: this fraction of compare.py's (about 2 GFLOP nominal, at least 8 batches).
SWEEP_FRACTION = 10


def sweep_config(name):
    """configs.config_named(name) with the smaller epoch SweepEpoch times (asv_samples)."""
    config = config_named(name)
    return dataclasses.replace(config, asv_samples=max(8 * config.batch_size, config.n_samples // SWEEP_FRACTION))


class Epoch:
    params = [list(CONFIGS)]
    param_names = ["config"]
    number = 1
    repeat = (1, 5, 20.0)
    timeout = 300

    @staticmethod
    def config_of(name):
        return CONFIGS[name]

    def setup(self, name):
        self.config = self.config_of(name)
        self.X, self.y = make_data(self.config, self.config.asv_samples)
        self.model = build_fastbp(self.config)
        fit_epoch(self.model, self.X, self.y, self.config)

    def time_epoch(self, name):
        fit_epoch(self.model, self.X, self.y, self.config)

    def track_samples_per_second(self, name):
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            fit_epoch(self.model, self.X, self.y, self.config)
            seconds.append(time.perf_counter() - start)
        return len(self.X) / statistics.median(seconds)

    track_samples_per_second.unit = "samples/s"

    def track_allocations_per_step(self, name):
        """numba runtime allocations per training step after warm-up (target 0)."""
        n_batches = min(8, len(self.X) // (2 * self.config.batch_size))
        return allocations_per_step(self.model, self.X, self.y, self.config, n_batches)

    track_allocations_per_step.unit = "allocations"


class SweepEpoch(Epoch):
    """The same, for each network of configs.SWEEP: the 2 to 5 layers, widths 16 to 1024 and
    batches 16 to 512 that the speed targets cover (compare.py --configs sweep runs them against
    JAX and PyTorch), so that asv follows where fastbp's own kernels and BLAS take turns."""

    params = [list(SWEEP)]
    param_names = ["network"]
    config_of = staticmethod(sweep_config)


class Memory:
    """Peak resident memory of the asv process around one full mnist epoch (data included)."""

    timeout = 600

    def setup(self):
        self.config = CONFIGS["mnist"]
        self.X, self.y = make_data(self.config)
        self.model = build_fastbp(self.config)
        n = 2 * self.config.batch_size
        fit_epoch(self.model, self.X[:n], self.y[:n], self.config)

    def peakmem_fit_mnist(self):
        fit_epoch(self.model, self.X, self.y, self.config)
