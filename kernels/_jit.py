"""Decorator policy for every CPU kernel: the only place where numba options live.

Kernels say ``@jit`` or ``@jit(parallel=True)``; caching, nopython mode and the
fastmath policy are decided here once (the pattern of sgkit's ``accelerate.py``).

fastmath is off by default. A kernel that earns it asks for ``fastmath=True``
and gets the safe flag set below: no ``nnan``/``ninf``, so NaN and inf still
propagate and training divergence stays detectable.
"""
import functools
import inspect
import os
import textwrap
import types as types_module

import numba
from numba import njit, types
from numba.core.registry import CPUDispatcher
from numba.extending import overload, register_jitable

from . import _cache

SAFE_FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

# Kernels below these sizes run serially: numba's thread pool costs a few
# microseconds per parallel region, more than the whole loop on tiny layers.
# Module constants are frozen into numba's cache; never change them at run time.
PARALLEL_MIN_ELEMENTS = 1 << 15

# One thread pool at a time. Parallel kernels are for calls of their own. A
# compiled loop that calls BLAS between kernels (fastbp.backends._cpu_loop:
# training, prediction, evaluation) calls their ``*_serial`` twins instead, so that only
# BLAS's threads run in it. OpenMP workers linger after a parallel region,
# spinning as long as the process's OpenMP runtime says, and that runtime is not
# ours to choose: PyTorch loads its libgomp globally, numba's pool then runs on
# it with PyTorch's settings (spinning), and the spinning workers starved the
# BLAS threads of the next product (mnist trained 9x slower with PyTorch
# imported first). Serial costs nothing measurable there: the elementwise passes
# and the optimizer update are memory-bound, and one core's bandwidth serves
# them (BENCHMARKS.md, "another OpenMP runtime in the process").
#
# How a twin is written: the loop, with prange, sits once in an inline helper;
# the parallel kernel inlines it above PARALLEL_MIN_ELEMENTS and calls the twin
# below; the twin inlines it too, where prange is a plain range. Never the same
# Python function compiled both ways (numba's cache keys entries by function
# and signature, not by options: the two would load each other's code), and
# never a helper holding both a range and a prange loop inlined into a serial
# function (25x slower code, measured).

# Every scalar function of _scalar.py, in definition order, so that the CUDA
# backend can register the very same Python functions for its own target.
SCALAR_FUNCTIONS = []


# Who calls a function (``jit(callers=...)``), and the numba wrappers each kind of caller needs.
# numba builds two wrappers around every function it compiles, whoever calls it: a CPython one
# (unboxing each argument from a Python object: a Python call) and a C one (a first-class
# function or cfunc address). Each is lowered, optimized and emitted with the function, and
# again inside every caller that links it. A function only compiled code calls needs neither:
# without them a cold `fastbp train` on one core took 12.43 s instead of 13.12 s (medians of
# sixteen alternated rounds, docs/performance-log.md, 2026-12-08, 21a6940).
CALLERS = {
    "any": {},
    "python": {"no_cfunc_wrapper": True},
    "compiled": {"no_cpython_wrapper": True, "no_cfunc_wrapper": True},
}


class CompiledOnly(CPUDispatcher):
    """A dispatcher compiled without numba's wrappers (``callers="compiled"``): compiled code
    calls it, and its address is taken (``get_compile_result``); a call from Python, which would
    reach the missing CPython wrapper (address 0), raises TypeError instead, through the
    dispatcher and through what ``compile`` returns. (numba's ``overloads[sig].entry_point`` is
    that missing wrapper still.)"""

    def __call__(self, *args, **kwargs):
        name = f"{self.py_func.__module__}.{self.py_func.__qualname__}"
        if getattr(self.py_func, "_fastbp_cache_tag", ""):
            raise TypeError(f"fastbp: this copy of {name} is the training loop's, compiled for calls from "
                            f"compiled code only (no Python wrapper); call {name} itself")
        raise TypeError(f"fastbp: {name} is compiled for calls from compiled code only (no Python wrapper); "
                        f"call it from an @njit function")

    def compile(self, sig):
        super().compile(sig)
        return self


def jit(func=None, *, parallel=False, fastmath=False, inline="never", refcounts=True, callers="any"):
    """Compile a CPU kernel with the project's policy.

    Usable bare (``@jit``) or with options (``@jit(parallel=True)``).

    ``callers`` says who calls the function, and so which of numba's wrappers it gets
    (``CALLERS``): "any" (Python, compiled code and first-class function use: the public kernels),
    "python" (Python and compiled code: the loop's levels that the backend calls), "compiled"
    (compiled code only, directly or by address: private helpers and the loop's kernel units;
    a ``CompiledOnly`` dispatcher, which refuses a Python call).

    ``refcounts=False`` compiles without numba's runtime (its ``_nrt=False``, which numba's own
    string functions use): no reference counting of arrays at all, and no allocation (numba
    refuses to compile one). For code that only cuts views of arrays its caller holds for the
    whole call and returns none: the training loop's levels (``fastbp/backends/_cpu_loop.py``).
    With the runtime, a function increfs every array of its arguments on entry and decrefs them
    on exit, each a call even where the array is borrowed: two calls per array in a namedtuple
    argument, 40 for each level of the 16-16-2 network's step (1.08-1.23x faster without them,
    docs/performance-log.md, 2026-11-30, 51bfeff).
    """
    options = dict(
        nogil=True,
        # Cached, but not by numba's cache=True, which writes beside the sources
        # (inside site-packages) and keys each function on its own file only:
        # _cache gives every kernel a per-user folder keyed on the whole kernel tree.
        cache=False,
        parallel=parallel,
        # numba accepts a set or dict here, not a frozenset: hand it a fresh copy.
        fastmath=set(SAFE_FASTMATH) if fastmath else False,
        inline=inline,
        error_model="numpy",
        boundscheck=False,
    )
    if not refcounts:
        options["_nrt"] = False
    if callers not in CALLERS:
        raise ValueError(f"callers must be one of {sorted(CALLERS)}, got {callers!r}")
    options.update(CALLERS[callers])

    def decorate(f):
        if callers == "compiled":
            # What numba's njit hands its dispatcher: the options less ``cache``, in nopython mode.
            targetoptions = {k: v for k, v in options.items() if k != "cache"}
            return _cache.enable_cpu(CompiledOnly(f, targetoptions=dict(targetoptions, nopython=True)))
        return _cache.enable_cpu(njit(**options)(f))

    return decorate if func is None else decorate(func)


@functools.lru_cache(maxsize=None)
def compiled_only(dispatcher):
    """``dispatcher`` (made by ``jit``) for compiled callers only: itself if it is one, else a
    twin made from the same Python function and options without numba's wrappers. For a kernel
    that the training loop calls by address and Python calls too (``dropout_forward_from``, a
    loss's or an optimizer's kernel of ``CODE_FORWARD`` or ``CODE_UPDATES``): Python calls keep
    the public dispatcher and its wrappers, the loop's tables take the twin. The twin caches
    under names of its own (``_cache``): numba keys cache entries by function and signature, not
    by options, and the public dispatcher must never load a compiled entry without the wrapper
    a Python call runs."""
    if isinstance(dispatcher, CompiledOnly):
        return dispatcher
    f = dispatcher.py_func
    twin = types_module.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    twin.__qualname__, twin.__module__, twin.__doc__ = f.__qualname__, f.__module__, f.__doc__
    twin.__kwdefaults__ = f.__kwdefaults__
    twin._fastbp_cache_tag = "compiled"
    options = dict(dispatcher.targetoptions, **CALLERS["compiled"])
    if isinstance(options.get("fastmath"), set):
        options["fastmath"] = set(options["fastmath"])
    return _cache.enable_cpu(CompiledOnly(twin, targetoptions=options))


@functools.lru_cache(maxsize=None)
def _with_constant_code(f, code):
    """The dispatcher ``f`` (first parameter ``code``) made again from its source with ``code`` a
    constant of its closure, for a caller whose code is a constant: numba's dead-branch pruning
    drops every branch on a closure constant but the one taken, so that only that code's formula
    is typed and lowered. For an argument (even a literal one) it prunes nothing, and every
    formula of ``f`` was compiled into each kernel made for one code."""
    source = textwrap.dedent(inspect.getsource(f))
    source = source[source.index("def "):]  # without the decorator
    head, body = source.split("\n", 1)
    if not head.startswith(f"def {f.__name__}(code, "):
        raise TypeError(f"a dispatcher's first parameter is its code: {head}")
    head = head.replace("(code, ", "(_code, ", 1)
    factory = f"def _factory(code):\n{textwrap.indent(head + chr(10) + body, '    ')}\n    return {f.__name__}\n"
    namespace = dict(f.__globals__)
    exec(compile(factory, inspect.getsourcefile(f), "exec"), namespace)
    return namespace["_factory"](code)


def scalar(func=None, *, dispatch=False):
    """Register a scalar function for CPU jit code; callable from Python too.

    The function is recorded in ``SCALAR_FUNCTIONS`` so the CUDA backend can
    compile the same source as a device function.

    Each is compiled once per signature as a function of its own. A formula
    (``relu``, ``gelu_grad``) is small, and LLVM inlines it where it pays. A
    dispatcher on a code (``activate``, ``loss_grad``: ``dispatch=True``) is
    marked always-inline for LLVM (numba's ``forceinline``): a kernel's loop then
    holds one branch per code, and a loop whose code is a constant folds to its
    one formula and vectorizes. Left to LLVM's cost model, a dispatcher stayed
    an opaque call per element wherever its code was not a constant (ReLU's
    generic loop 3x slower).

    A dispatcher is not inlined into its callers' numba IR (``inline="always"``): numba would
    type and lower every copy again, seconds of compile time per call site
    (``layernorm_act_backward`` has six), and the formulas inlined there cost more still. LLVM
    inlines the same code, but may optimize a loop around it differently: the norm backward
    kernels' identity and ReLU copies ran 1.5x slower until they called the formula directly
    (``norm._dz``). The timings are in docs/performance-log.md. A helper with one call site
    and no formula dispatch of its own (the dense kernels' product drivers) is the other way
    round: inlined into numba's IR it is typed once either way, and is not compiled, optimized
    and emitted as a function of its own before its caller optimizes it again
    (``kernels/cpu/dense.py``).

    A call of a dispatcher whose code is a constant (a literal: a global or a closure's cell, as in
    the kernels made for one activation code) compiles the dispatcher again with the code a
    constant of its closure (``_with_constant_code``), so that numba drops the other codes'
    branches before typing them: a BatchNorm op's forward for ReLU compiled in 1.0 s instead of
    2.6 s, typing ReLU's formula alone instead of all of them. The arithmetic is the one formula's,
    as LLVM's folding of the branches gave before.

    The floating-point flags are fixed here, not inherited: numba compiles a
    shared function with the options of whichever kernel calls it first, so
    a fastmath kernel (``_small_forward``) compiling ``activate`` first would
    have handed its flags, and other rounding, to every kernel after it, and
    results would have depended on the order of compilation. The scalar code is
    IEEE arithmetic everywhere, fastmath kernels included.
    """
    options = dict(fastmath=False, error_model="numpy")

    def register(f):
        SCALAR_FUNCTIONS.append(f)
        if not dispatch:
            return register_jitable(**options)(f)

        @overload(f, jit_options=dict(forceinline=True, **options), strict=False, prefer_literal=True)
        def typed(code, *args):
            if isinstance(code, types.IntegerLiteral):
                return _with_constant_code(f, code.literal_value)
            return f
        return f

    return register if func is None else register(func)


# No OMP_WAIT_POLICY here. fastbp set it to PASSIVE at import once, when its
# training loop still had parallel regions between BLAS calls; that reached every
# OpenMP library loaded later in the process (PyTorch trained 2.4x slower on
# mnist, 3.4x on small: BENCHMARKS.md), came too late for one loaded earlier, and
# is needed no more: the compiled loops run no numba parallel region (above).

# Start numba's thread pool now, before any kernel runs. numba 0.68 starts it
# when it compiles or loads a parallel function itself, but a cached plain
# function (the model's loop, or a user's @njit(cache=True) code) that calls
# parallel kernels which themselves came from the cache does not record that
# dependency, loads without starting the pool, and crashes on its first call.
# Starting threads compiles nothing.
numba.get_num_threads()
