"""asv: one training epoch of fastbp.Sequential per configuration, its throughput, peak memory
and the numba allocations per training step.

Epochs here have Config.asv_samples samples (layer and batch sizes as in the full
configuration) so that a benchmark stays within a few seconds; compare.py runs the full ones.
setup runs one epoch first, so compiling (or loading numba's cache) is never timed.
"""
import statistics
import time

from .configs import CONFIGS, allocations_per_step, build_fastbp, fit_epoch, make_data


class Epoch:
    params = [list(CONFIGS)]
    param_names = ["config"]
    number = 1
    repeat = (1, 5, 20.0)
    timeout = 300

    def setup(self, name):
        self.config = CONFIGS[name]
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
