"""Progress display for fit: a live bar on a terminal or in a notebook, one line per epoch elsewhere.

verbose: 'auto' and 1/True draw a bar where someone watches it live (stderr is a
terminal, or fit runs in a Jupyter kernel) and print one line per epoch
elsewhere (a log file, a pipe, CI), where every redraw of a bar would be
written out; 2 is always one line per epoch, 0/False nothing. The bar is
tqdm's (its notebook widget in a notebook) when tqdm is installed and usable,
and a plain carriage-return line otherwise. Each epoch ends with its full summary
on a line of its own, never cut to a bar's width.
"""
import sys
import time


def in_notebook():
    """Whether this process is a Jupyter (IPython) kernel, where stderr is no terminal but is
    watched live. Looks only at an IPython already imported: fastbp never imports it."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    if get is None:
        return False
    try:
        shell = get()
    except Exception:
        return False
    if shell is None:
        return False
    # ZMQInteractiveShell is Jupyter's kernel; other kernels (Colab's) are told by the
    # kernel application in their config, as tqdm.autonotebook tells them.
    return type(shell).__name__ == "ZMQInteractiveShell" or "IPKernelApp" in getattr(shell, "config", {})


def _live():
    """Whether the progress is watched as it happens: a terminal or a notebook."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        terminal = False
    return terminal or in_notebook()


def mode(verbose):
    """0 (nothing), 1 (a live bar) or 2 (one line per epoch) for fit's ``verbose``."""
    if isinstance(verbose, str) and verbose == "auto":
        return 1 if _live() else 2
    if verbose in (0, 1, 2, True, False) and not isinstance(verbose, str):
        verbose = int(verbose)
        return 2 if verbose == 1 and not _live() else verbose
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


def _bar(n_batches, epoch, epochs):
    """A tqdm bar for a terminal or a notebook, or None where tqdm is missing or unusable
    (a notebook without ipywidgets): the text bar then."""
    try:
        if in_notebook():
            # tqdm's widget needs ipywidgets; without it tqdm.notebook fails half-built.
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm
        else:
            from tqdm import tqdm
        # leave=False: the bar goes at the epoch's end, and the full summary line stays.
        return tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                    file=sys.stderr, dynamic_ncols=True)
    except Exception:  # ImportError, or tqdm.notebook's error without its widgets
        return None


class EpochProgress:
    """Progress over the batches of one epoch."""

    def __init__(self, verbose, epoch, epochs, n_batches):
        self.mode = verbose
        self.epoch, self.epochs, self.n_batches = epoch, epochs, n_batches
        self.start = time.perf_counter()
        self.bar = _bar(n_batches, epoch, epochs) if self.mode == 1 else None
        self.drawn = 0  # width of the text bar's last line, to blank it out at the end

    def update(self, done, samples, loss):
        if self.mode != 1:
            return
        rate = samples / max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(f"loss {loss:.4f}, {rate:,.0f} samples/s", refresh=True)
        else:
            line = (f"epoch {self.epoch + 1}/{self.epochs} [{done}/{self.n_batches}] "
                    f"loss {loss:.4f}, {rate:,.0f} samples/s")
            sys.stderr.write("\r" + line.ljust(self.drawn))
            sys.stderr.flush()
            self.drawn = len(line)

    def close(self, logs):
        line = f"epoch {self.epoch + 1}/{self.epochs}: {_format(logs)}"
        if self.mode == 1:
            if self.bar is not None:
                self.bar.close()
                sys.stderr.write(line + "\n")
            else:
                sys.stderr.write("\r" + line.ljust(self.drawn) + "\n")
            sys.stderr.flush()
        elif self.mode == 2:
            print(line, flush=True)


class counter:
    """Progress over ``total`` named steps (``fastbp compile``): tqdm's bar where someone watches
    (a terminal or a notebook) and tqdm is installed, else one line per step ("[3/12] name").
    Used as a context manager, it gives the function to call after each step with its name."""

    def __init__(self, total, what, enabled=True):
        self.total, self.what, self.enabled, self.done, self.bar = total, what, enabled, 0, None

    def __enter__(self):
        if self.enabled and _live():
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=self.total, desc=self.what, unit="unit", file=sys.stderr)
            except ImportError:
                pass
        return self.step

    def step(self, name):
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {name}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
