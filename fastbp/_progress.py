"""Progress display for fit: a live bar on a terminal, silence elsewhere unless asked.

verbose: 'auto' (a bar when stderr is a terminal), 1/True (always a bar),
2 (one line per epoch), 0/False (nothing). The bar uses tqdm when it is
installed and a plain carriage-return line otherwise.
"""
import sys
import time


def mode(verbose):
    if verbose == "auto":
        return 1 if sys.stderr.isatty() else 0
    if verbose in (0, 1, 2, True, False):
        return int(verbose)
    raise ValueError(f"verbose must be 'auto', 0, 1 or 2; got {verbose!r}")


def _format(logs):
    parts = []
    for key, value in logs.items():
        if key == "samples_per_second":
            parts.append(f"{value:,.0f} samples/s")
        elif key == "compile_seconds":
            parts.append(f"compiled first in {value:.1f} s (not counted in samples/s)")
        elif key not in ("seconds", "lr"):
            parts.append(f"{key} {value:.4f}")
    return ", ".join(parts)


class EpochProgress:
    """Progress over the batches of one epoch."""

    def __init__(self, verbose, epoch, epochs, n_batches):
        self.mode = verbose
        self.epoch, self.epochs, self.n_batches = epoch, epochs, n_batches
        self.start = time.perf_counter()
        self.bar = None
        if self.mode == 1:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                                leave=True, file=sys.stderr, dynamic_ncols=True)

    def update(self, done, samples, loss):
        if self.mode != 1:
            return
        rate = samples / max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(f"loss {loss:.4f}, {rate:,.0f} samples/s", refresh=True)
        else:
            sys.stderr.write(f"\repoch {self.epoch + 1}/{self.epochs} [{done}/{self.n_batches}] "
                             f"loss {loss:.4f}, {rate:,.0f} samples/s")
            sys.stderr.flush()

    def close(self, logs):
        if self.mode == 1:
            if self.bar is not None:
                self.bar.n = self.n_batches
                self.bar.set_postfix_str(_format(logs), refresh=True)
                self.bar.close()
            else:
                sys.stderr.write(f"\repoch {self.epoch + 1}/{self.epochs}: {_format(logs)}\n")
        elif self.mode == 2:
            print(f"epoch {self.epoch + 1}/{self.epochs}: {_format(logs)}", flush=True)
