"""asv: what this machine can do, beside what fastbp does (bench_training): one core's float32
FMA peak, the clock it ran at, and the BLAS's SGEMM rate (benchmarks/peak.py).

Tracked with the training figures so that a change in samples/s can be told from a change in the
machine: a slower epoch on a run whose peaks fell too is the machine's (a lower boost clock, a
busier neighbour), not the code's. A network's real GFLOP/s (configs.Config.real_epoch_flops)
over these is its fraction of each peak, as compare.py reports.
"""
from .peak import SGEMM_SIZE, clock_ghz, default_width, fma_gflops, sgemm_gflops


class Peak:
    timeout = 120

    def setup(self):
        fma_gflops(seconds=0.001, repeats=1)  # compiles the micro-kernel outside the timing

    def track_fma_gflops(self):
        """One core, float32, fastbp's vector width (peak.default_width)."""
        return fma_gflops(default_width())

    track_fma_gflops.unit = "GFLOP/s"

    def track_clock_ghz(self):
        return clock_ghz() or 0.0

    track_clock_ghz.unit = "GHz"

    def track_sgemm_gflops(self):
        """NumPy float32 SGEMM_SIZE^3 product with the BLAS's default threads."""
        return sgemm_gflops(SGEMM_SIZE)

    track_sgemm_gflops.unit = "GFLOP/s"
