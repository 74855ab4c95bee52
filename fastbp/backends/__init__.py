"""The backends that run a lowered network (``fastbp.lowering``): ``cpu`` and ``cuda``.

Both implement one small interface, described in ``cpu.py``: a ``Trainer``
(begin_epoch, run, running_loss, end_epoch), ``outputs`` and ``evaluate``.
``cpu`` runs whole runs of batches in one compiled call (``_cpu_loop.py``);
``cuda`` launches the CUDA kernels op by op on device-resident data.
"""


def get(device):
    """The backend module for ``device`` ('cpu' or 'cuda'); cuda is imported only when asked for."""
    if device == "cuda":
        from . import cuda

        return cuda
    from . import cpu

    return cpu
