"""The registry is the one source of codes, both backends dispatch by it the same way, and the
modules import one another in the layer order docs/architecture.md states."""
import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp.kernels import registry as R
from backends import BACKENDS
from compile_events import RECORD

FASTBP_DIR = Path(fastbp.__file__).resolve().parent


def test_codes_are_unique_and_every_table_derives_from_the_registry():
    for table in (R.ACTIVATION_TABLE, R.LOSS_TABLE):
        codes = [row.code for row in table]
        assert len(set(codes)) == len(codes) and sorted(codes) == list(range(len(codes)))
    assert fastbp.layers.ACTIVATIONS is R.ACTIVATIONS
    assert fastbp.kernels.ACTIVATIONS == {a.name: a.code for a in R.ACTIVATION_TABLE if a.backward_from != "rows"}
    assert R.OUTPUT_DERIVABLE == {a.code for a in R.ACTIVATION_TABLE if a.backward_from == "output"}
    for loss in (fastbp.losses.SoftmaxCrossEntropy(), fastbp.losses.BinaryCrossEntropy(),
                 fastbp.losses.MeanSquaredError(), fastbp.losses.Poisson(), fastbp.losses.Huber(),
                 fastbp.losses.MeanAbsoluteError()):
        assert (loss.name, loss.link) == (R.LOSS_TABLE[loss.kind].name, R.LOSS_TABLE[loss.kind].link)
    assert fastbp.losses.Huber().delta == R.LOSS_TABLE[R.LOSS_HUBER].param
    assert set(R.INPUT_DERIVED) == {a.code for a in R.ACTIVATION_TABLE if a.backward_from == "input"}
    assert len({R.H_LR, R.H_MOMENTUM, R.H_NESTEROV, R.H_WEIGHT_DECAY, R.H_BETA1, R.H_BETA2, R.H_EPS,
                R.H_DECOUPLED, R.H_ALPHA, R.H_CENTERED, R.H_LR_DECAY, R.H_EPS_HAT}) == R.N_HYPER
    assert len({R.S_LOSS, R.S_WEIGHT, R.S_CORRECT, R.S_SQUARED, R.S_ABSOLUTE, R.S_COUNT,
                R.S_ELEMENTS}) == R.N_STATS


def _named_kernels(backend):
    if backend == "cuda":
        from fastbp.kernels.cuda import activations
    else:
        from fastbp.kernels.cpu import activations
    return activations


def device_array(backend, a):
    if backend == "cuda":
        from numba import cuda

        return cuda.to_device(a)
    return a


def to_host(backend, a):
    return a.copy_to_host() if backend == "cuda" else a.copy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", R.ACTIVATION_TABLE, ids=lambda a: a.name)
def test_dispatch_by_code_runs_the_named_kernel(backend, activation):
    # activation_code_* is what both training loops call; it must be the named kernel, bit for bit.
    A = _named_kernels(backend)
    rng = np.random.default_rng(activation.code)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    dout = rng.standard_normal((5, 7)).astype(np.float32)
    alpha = activation.alpha or 0.0
    extra = (alpha,) if activation.alpha is not None else ()
    by_name = np.empty_like(x)
    by_code = np.empty_like(x)
    out_dev, x_dev = device_array(backend, by_name), device_array(backend, x)
    getattr(A, activation.name + "_forward")(out_dev, x_dev, *extra)
    by_name = to_host(backend, out_dev)
    code_dev = device_array(backend, by_code)
    A.activation_code_forward(code_dev, x_dev, np.int64(activation.code), alpha)
    np.testing.assert_array_equal(to_host(backend, code_dev), by_name)

    y_dev = device_array(backend, by_name)
    dx_name, dx_code = device_array(backend, np.empty_like(x)), device_array(backend, np.empty_like(x))
    dout_dev = device_array(backend, dout)
    second = x_dev if activation.backward_from == "input" else y_dev
    if activation.name == "identity":
        A.identity_backward(dx_name, dout_dev)
    else:
        getattr(A, activation.name + "_backward")(dx_name, dout_dev, second, *extra)
    A.activation_code_backward(dx_code, dout_dev, y_dev, x_dev, np.int64(activation.code), alpha)
    np.testing.assert_array_equal(to_host(backend, dx_code), to_host(backend, dx_name))
    if backend == "cpu":
        # The CPU training loop calls the kernels compiled for this one code: the same bits.
        A.activation_forward_for(activation.code)(code_dev, x_dev, np.int64(-1), alpha)
        np.testing.assert_array_equal(code_dev, by_name)
        A.activation_backward_for(activation.code)(dx_code, dout_dev, y_dev, x_dev, np.int64(-1), alpha)
        np.testing.assert_array_equal(dx_code, to_host(backend, dx_name))


# Public keyword APIs (fit, the scikit-learn constructors) may take many parameters; nothing else.
_PUBLIC_WIDE = {("model.py", "fit"), ("estimators.py", "__init__")}


def test_no_internal_function_of_the_model_layer_takes_more_than_12_parameters():
    wide = []
    for path in sorted(FASTBP_DIR.rglob("*.py")):
        relative = path.relative_to(FASTBP_DIR)
        if relative.parts[0] == "kernels":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (a.args[:1] != [] and
                                                                                 a.args[0].arg == "self")
                if count > 12 and (path.name, node.name) not in _PUBLIC_WIDE:
                    wide.append(f"{relative}:{node.lineno} {node.name} ({count})")
    assert wide == []
    # The compiled training loop in particular: grouped values, not dozens of arrays.
    from fastbp.backends import _cpu_loop

    assert len(inspect.signature(_cpu_loop.train_batches.py_func).parameters) <= 12



def _one_letter_imports(source):
    """(line, import statement) of each import in source that binds a one-letter name."""
    return [(node.lineno, ast.unparse(node)) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            and any(len(alias.asname or alias.name.split(".")[0]) == 1 for alias in node.names)]


def test_the_model_layer_imports_no_module_under_a_one_letter_name():
    found = {}
    for path in sorted(FASTBP_DIR.rglob("*.py")):
        relative = path.relative_to(FASTBP_DIR)
        imports = _one_letter_imports(path.read_text()) if relative.parts[0] != "kernels" else []
        if imports:
            found[relative.as_posix()] = imports
    assert found == {}, "import the module by its name (from .kernels import registry; registry.LOSS_SCE)"
    # The check sees both forms of import, and passes two-letter names and plain imports.
    assert _one_letter_imports("import numpy as np\nfrom . import losses\nfrom .kernels import registry as R\n"
                               "def f():\n    import fastbp.kernels as k\n") == [
        (3, "from .kernels import registry as R"), (5, "import fastbp.kernels as k")]

_LOOP_COMPILES = RECORD + """
import json
import numpy as np
import fastbp
from fastbp.backends import _cpu_loop, _kernel_tables

model = fastbp.Sequential([fastbp.Dense(3, 4, activation="relu"), fastbp.Dropout(0.5), fastbp.Dense(4, 2)], seed=0)
model.compile("softmax_cross_entropy", fastbp.SGD())
lowered = model.lowered()
flags = [lowered.net.activation_ops, lowered.net.batchnorm_ops, lowered.net.layernorm_ops,
         bool(lowered.net.dropout_ops)]
net = _kernel_tables.with_kernels(lowered.net, model.dtype, model.loss.kind, model.optimizer.kind)
ws = lowered.workspace(2, model.dtype, True, model.loss.kind, model.buffers)
# Compiled, not called: the loop's inner levels are for compiled callers only (no Python wrapper).
for level, args in ((_cpu_loop.forward, (net, ws, model.theta, 2, np.bool_(True), np.int64(0), np.int64(0))),
                    (_cpu_loop.update_running, (net, ws, 2))):
    level.compile(tuple(level.typeof_pyval(a) for a in args))
print(json.dumps([flags, sorted(set(compiled))]))
"""


def test_the_loop_compiles_no_kernel_of_an_op_kind_the_network_lacks(tmp_path):
    # A fresh interpreter with a cold cache, so that every kernel the loop reaches compiles and is seen.
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTBP_CACHE_DIR=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", _LOOP_COMPILES], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    flags, compiled = json.loads(done.stdout.splitlines()[-1])
    assert flags == [None, None, None, True]  # Dense and Dropout only
    # One flag per kind: a network with BatchNorm has no LayerNorm kernels to compile, and the reverse.
    for layer, want in ((fastbp.BatchNorm(4), [True, None]), (fastbp.LayerNorm(4), [None, True])):
        net = fastbp.Sequential([fastbp.Dense(3, 4), layer, fastbp.Dense(4, 2)]).lowered().net
        assert [None if f is None else bool(f) for f in (net.batchnorm_ops, net.layernorm_ops)] == want
    # The kinds it has compile (the walk sees them) ...
    assert {"forward", "dense_table_forward", "dropout_forward_from", "update_running"} <= set(compiled)
    # ... those it lacks do not: no norm kernel, no activation-op kernel.
    absent = {"batchnorm_act_forward", "layernorm_act_forward", "batchnorm_update_running", "activation_code_forward"}
    assert not absent & set(compiled), sorted(absent & set(compiled))
    assert not [name for name in compiled if name.startswith(("activation_forward_", "activation_backward_",
                                                              "batchnorm_op_", "layernorm_op_"))]
    # ReLU and identity dense layers: the table's dense kernels apply them; neither a per-code dense
    # kernel nor the public kernels' passes of every other code compile.
    assert not [name for name in compiled if name.startswith(("dense_act_apply_", "dense_act_grad_"))]
    assert not {"dense_act_forward", "dense_act_backward"} & set(compiled)
    # The kernel table holds the model's loss and optimizer (softmax cross-entropy, SGD) alone: the
    # other losses and optimizers, and the dispatchers over all of them, do not compile.
    assert {"sce_code_forward", "sce_code_backward", "softmax_stats", "sgd_code_update"} <= set(compiled)
    others = {"adam_code_update", "rmsprop_code_update", "adagrad_code_update", "optimizer_code_update",
              "mse_code_forward", "bce_code_backward", "elementwise_loss_forward", "loss_code_forward",
              "elementwise_stats"}
    assert not others & set(compiled), sorted(others & set(compiled))


def test_a_kernel_table_calls_its_kernels_and_refuses_other_argument_types():
    from numba import njit
    from numba.core.errors import TypingError

    from fastbp.backends import _kernel_tables

    table = _kernel_tables.kernel_table("dropout_ops", np.float32)

    @njit
    def inference(table, out, x):
        _kernel_tables.kcall(table, "inference", (out, x))

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = np.zeros_like(x)
    inference(table, out, x)  # dropout_inference, called through its address
    assert np.array_equal(out, x)

    @njit
    def wrong(table, a):
        _kernel_tables.kcall(table, "backward", (a, a, a))

    # 1-d arrays where the kernel was compiled for matrices: refused when the caller compiles,
    # never called through the address.
    with pytest.raises(TypingError, match="its table holds it for"):
        wrong(table, np.zeros(4, dtype=np.float32))


def test_a_table_by_code_calls_the_kernel_of_the_op_code_and_refuses_a_code_it_lacks():
    from numba import njit

    from fastbp.backends import _kernel_tables

    table = _kernel_tables.kernel_table("activation_ops", np.float32)
    addresses = _kernel_tables.code_kernels(np.float32, {"activation_ops": (R.RELU, R.TANH)})

    @njit
    def forward(addresses, table, code, out, x):
        _kernel_tables.kcall_code(addresses, table, "forward", code, (out, x, code, 0.0))

    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    out = np.zeros_like(x)
    forward(addresses, table, np.int64(R.TANH), out, x)
    assert np.array_equal(out, np.tanh(x))
    forward(addresses, table, np.int64(R.RELU), out, x)
    assert np.array_equal(out, np.maximum(x, 0))
    # A code the table was not made for, or no code at all: an error, never a call of address 0.
    out[:] = 7
    with pytest.raises(RuntimeError, match="not in the table"):
        forward(addresses, table, np.int64(R.GELU), out, x)
    with pytest.raises(RuntimeError, match="no 'forward' kernel for this code"):
        forward(addresses, table, np.int64(_kernel_tables.N_CODES), out, x)
    with pytest.raises(RuntimeError, match="no 'forward' kernel for this code"):
        forward(addresses, table, np.int64(-1), out, x)
    assert np.all(out == 7)


def test_a_table_made_without_loss_and_optimizer_refuses_their_kernels_when_called():
    # predict of a model never compiled: the table's loss, update and stats entries raise, as
    # they must never be reached; a code with no kernel is refused when the table is made.
    from numba import njit

    from fastbp.backends import _kernel_tables

    table = _kernel_tables.kernel_table("kernels", np.float64)

    @njit
    def update(table, theta, hyper):
        _kernel_tables.kcall(table, "update", (theta, theta, theta, theta, np.int64(1), np.int64(R.OPT_SGD), hyper,
                                               np.int64(1)))

    theta = np.ones(3)
    with pytest.raises(RuntimeError, match="made without a loss or an optimizer"):
        update(table, theta, np.full(R.N_HYPER, 0.5))
    assert np.array_equal(theta, np.ones(3))
    sgd = _kernel_tables.kernel_table("kernels", np.float64, R.LOSS_SCE, R.OPT_SGD)
    update(sgd, theta, np.full(R.N_HYPER, 0.5))  # this one updates
    assert not np.array_equal(theta, np.ones(3))
    with pytest.raises(ValueError, match="no update kernel for optimizer code 99"):
        _kernel_tables.kernel_table("kernels", np.float64, R.LOSS_SCE, 99)


# ----- The import graph: no cycle, imports only downward, no private name of another module ----------

ROOT = Path(__file__).resolve().parents[1]


def _modules():
    """{dotted name: (path, is_package)} of every module of fastbp and fastbp.kernels, from the source tree."""
    found = {}
    for base, prefix in ((ROOT / "fastbp", "fastbp"), (ROOT / "kernels", "fastbp.kernels")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if prefix == "fastbp" and parts[0] == "kernels":
                continue  # the link to kernels/, walked as fastbp.kernels
            is_package = parts[-1] == "__init__"
            found[".".join([prefix] + parts[:-1 if is_package else None])] = (path, is_package)
    return found


def _source(name, path, is_package):
    """(the module's syntax tree, the package its relative imports start from)."""
    return ast.parse(path.read_text()), name if is_package else name.rpartition(".")[0]


def _from_target(node, package):
    """The module a ``from ... import`` names, relative levels resolved; None outside fastbp."""
    if node.level:
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        return f"{base}.{node.module}" if node.module else base
    return node.module if (node.module or "").split(".")[0] == "fastbp" else None


def _imports(name, path, is_package, modules):
    """(target module, imported name or None, line) for every import of fastbp in the module,
    at module level and inside functions. ``from p import m`` of a submodule m targets p.m;
    of any other name, p itself."""
    tree, package = _source(name, path, is_package)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fastbp":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and _from_target(node, package) is not None:
            target = _from_target(node, package)
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    yield f"{target}.{alias.name}", None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _private_uses(name, path, is_package, modules):
    """'module:line what' for each private name of another module that this one imports
    (``from m import _f``) or reads off a module it imported (``m._f``)."""
    tree, package = _source(name, path, is_package)
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "fastbp"
        elif isinstance(node, ast.ImportFrom) and _from_target(node, package) is not None:
            target = _from_target(node, package)
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
                elif _private(alias.name) and target != name:
                    found.append(f"{name}:{node.lineno} from {target} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and _private(node.attr) and aliases[node.value.id] != name:
            found.append(f"{name}:{node.lineno} {aliases[node.value.id]}.{node.attr}")
    return found


def _private(attr):
    return attr.startswith("_") and not attr.startswith("__")


def _graph():
    modules = _modules()
    return modules, {name: {target for target, _, _ in _imports(name, *modules[name], modules)} - {name}
                     for name in modules}


def _layers():
    """The layer order docs/architecture.md states: [(layer name, {module or 'prefix.*'})], lowest first."""
    text = (ROOT / "docs" / "architecture.md").read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in text.splitlines():
        match = re.match(r"^\d+\. ([^:]+): (.*)$", line)
        if match:
            layers.append((match[1], {("fastbp." + m if m != "fastbp" else m) for m in re.findall(r"`([\w.*]+)`",
                                                                                                   match[2])}))
    return layers


def _layer_of(module, layers):
    for rank, (_, members) in enumerate(layers):
        if module in members or any(m.endswith(".*") and (module + ".").startswith(m[:-1]) for m in members):
            return rank
    return None


def _cycles(edges):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_walk_sees_module_and_function_level_and_relative_imports():
    modules, edges = _graph()
    assert {"fastbp.model", "fastbp.backends._cpu_loop", "fastbp.kernels.registry", "fastbp.kernels.cpu.dense"} <= set(
        modules)
    assert "fastbp.kernels.registry" in edges["fastbp.layers"]  # from .kernels.registry import ...
    assert "fastbp.kernels.registry" in edges["fastbp.backends._cpu_loop"]  # from ..kernels import registry
    assert "fastbp.backends.cpu" in edges["fastbp.backends"]  # inside get()
    assert "fastbp.kernels._cache" in edges["fastbp.kernels._jit"]
    assert edges["fastbp.kernels.registry"] == set()
    # Every import of fastbp names a module that exists.
    assert not {(m, t) for m in edges for t in edges[m] if t not in modules}
    # A cycle is found.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_fastbp_or_its_kernels():
    _, edges = _graph()
    assert _cycles(edges) == []


def test_every_import_points_down_the_layers_of_docs_architecture():
    modules, edges = _graph()
    layers = _layers()
    assert [name for name, _ in layers][:1] == ["kernels"] and len(layers) >= 5
    unplaced = sorted(m for m in modules if _layer_of(m, layers) is None)
    assert unplaced == [], f"docs/architecture.md's layers do not place {unplaced}"
    stale = sorted(m for _, members in layers for m in members if not m.endswith(".*") and m not in modules)
    assert stale == [], f"docs/architecture.md's layers name modules that do not exist: {stale}"
    upward = sorted(f"{m} ({layers[_layer_of(m, layers)][0]}) imports {t} ({layers[_layer_of(t, layers)][0]})"
                    for m in edges for t in edges[m] if _layer_of(t, layers) > _layer_of(m, layers))
    assert upward == []


def test_no_module_imports_a_private_name_of_another(tmp_path):
    # A private module (_validation, backends._cpu_loop) is the package's own and may be imported
    # anywhere in it; a private name inside a module (_dtype, _fail) belongs to that module alone.
    modules = _modules()
    found = [use for name in modules for use in _private_uses(name, *modules[name], modules)]
    assert found == []
    # The check sees both forms, and lets a module use its own private names and a private module.
    probe = tmp_path / "probe.py"
    probe.write_text("from . import model, _validation\nfrom .backends._warm import _die_with, start\n"
                     "def f():\n    from .probe import _own\n    return model._dtype, _validation.check_int\n")
    assert _private_uses("fastbp.probe", probe, False, modules) == [
        "fastbp.probe:2 from fastbp.backends._warm import _die_with", "fastbp.probe:5 fastbp.model._dtype"]


# The registry's layout columns, which only lowering reads: where a Dense layer's weight and bias,
# a norm op's gamma, beta, running and saved statistics sit.
_LAYOUT_COLUMNS = {name for name in dir(R) if name.startswith(("NORM_", "SAVED_", "PARAM_"))}


def _offset_arithmetic(source):
    """(line, code) of each read of a layout column, and of each subscript of a buffer that
    lowering's views cut (``saved``, ``running``, ``norms``, ``params``), in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in _LAYOUT_COLUMNS:
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Subscript):
            target = node.value
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if name in ("saved", "running", "norms", "params"):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_only_lowering_computes_an_offset_into_theta_the_buffers_or_the_workspace():
    assert {"NORM_GAMMA", "NORM_RUNNING_VAR", "SAVED_INVSTD", "PARAM_FAN_OUT"} <= _LAYOUT_COLUMNS
    assert sorted(line for line, _ in _offset_arithmetic(
        "a = net.norms[i, registry.NORM_GAMMA]\nb = self.saved[k]\nc = lowering.norm_running(running, norms, i, w)\n"
        "d = params[p, 2]\n")) == [1, 1, 2, 4]
    found = {}
    for path in sorted(FASTBP_DIR.rglob("*.py")):
        relative = path.relative_to(FASTBP_DIR).as_posix()
        if relative != "lowering.py" and not relative.startswith("kernels/"):
            uses = _offset_arithmetic(path.read_text())
            if uses:
                found[relative] = uses
    assert found == {}, "cut an op's views with lowering's functions (norm_statistics, dense_extent, ...)"


@pytest.mark.parametrize("layers,order,input_grads", [
    # Dense, ReLU, Dense: every op backward; the first computes no input gradient.
    (lambda: [fastbp.Dense(3, 4), fastbp.ReLU(), fastbp.Dense(4, 2)], [2, 1, 0], [0, 1, 1]),
    # A dropout of the inputs and a norm layer without gamma and beta pass no gradient on to a
    # parameter: their backward does not run, and the first Dense computes no input gradient.
    (lambda: [fastbp.Dropout(0.5), fastbp.BatchNorm(3, affine=False), fastbp.Dense(3, 4), fastbp.Dense(4, 2)],
     [3, 2], [0, 0, 0, 1]),
    # A norm layer with gamma and beta learns: its backward runs, with no input gradient.
    (lambda: [fastbp.Activation("tanh"), fastbp.LayerNorm(3), fastbp.Dense(3, 2)], [2, 1], [0, 0, 1]),
])
def test_lowering_plans_the_backward_pass(layers, order, input_grads):
    net = fastbp.Sequential(layers()).lowered().net
    assert list(net.backward_order) == order
    assert list(net.input_grads) == input_grads


@pytest.mark.parametrize("device", BACKENDS)
def test_both_walkers_follow_the_backward_plan(device):
    # Both backends leave the gradient of every activation in front of the first parameters
    # untouched (NaN here), and still train those parameters.
    from fastbp.backends import cpu, cuda
    from fastbp.lowering import Targets
    model = fastbp.Sequential([fastbp.Dropout(0.5), fastbp.BatchNorm(3, affine=False), fastbp.Dense(3, 4),
                               fastbp.Dense(4, 2)], seed=0, device=device)
    model.compile("softmax_cross_entropy", fastbp.SGD(0.1))
    model.optimizer.init_state(model.theta.size, model.dtype)
    X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    data = Targets(np.arange(8, dtype=np.int64) % 2, np.zeros((0, 0), np.float32), np.zeros(0, np.float32))
    lowered = model.lowered()
    trainer = (cpu if device == "cpu" else cuda).Trainer(model, lowered, X, data, 8, 0)
    before = model.theta.copy()
    if device == "cpu":
        trainer.ws.dacts[:] = np.nan
    else:
        trainer.net.dacts.copy_to_device(np.full(trainer.net.dacts.shape, np.nan, np.float32))
    trainer.begin_epoch(np.arange(8, dtype=np.int64), model.optimizer.hyper(0.1))
    status, _ = trainer.run(0, 1)
    trainer.end_epoch(np.zeros(R.N_STATS))
    dacts = trainer.ws.dacts if device == "cpu" else trainer.net.dacts.copy_to_host()
    layout = lowered.net.layout
    assert status == R.OK
    assert not np.array_equal(np.asarray(model.theta), before)
    upto = 8 * layout[3]  # activations 0, 1, 2: the inputs and the outputs of dropout and BatchNorm
    assert np.isnan(dacts[:upto]).all()
    assert np.isfinite(dacts[upto:upto + 8 * (layout[-1] - layout[3])]).all()  # the Dense layers' output gradients


def test_every_table_kernel_takes_the_arguments_of_the_spec_its_signature_comes_from():
    from fastbp.backends import _kernel_tables

    mismatched = []
    for name, table in _kernel_tables.TABLES.items():
        for field, entry in zip(table._fields, table):
            spec = getattr(_kernel_tables.SPECS[name], field)
            if entry is None:
                continue
            if isinstance(entry, dict):
                kernels = list(entry.values())
            elif (name, field) in _kernel_tables.CODE_ROWS:  # a factory of one kernel per code
                codes = (R.ACTIVATIONS.values() if name == "activation_ops" else R.OUTPUT_DERIVABLE
                         if name == "kernels" else R.ELEMENTWISE_CODES.values())
                kernels = [entry(code) for code in codes]
            else:
                kernels = [entry]
            for kernel in kernels:
                # A per-code kernel ignores its code argument, named "_code".
                params = tuple(p.lstrip("_") for p in inspect.signature(kernel.py_func).parameters)
                if params != spec.names:
                    mismatched.append((name, field, kernel.py_func.__qualname__, params, spec.names))
    assert mismatched == []
    from numba import types

    # The stats kernels' loss is a float of the parameters' dtype; their sums are float64.
    stats = _kernel_tables._signatures(np.dtype("float32"))["kernels"].stats
    assert stats.args[:2] == (types.Array(types.float64, 1, "C"), types.float32)


def test_a_spec_gives_the_compiled_signature_and_checks_its_typed_arrays():
    from numba import types

    from fastbp.kernels._checks import ArgSpec, KernelArgumentError, check_arrays, numba_signature

    spec = ArgSpec([("out", "NO"), ("b", "O?"), ("loss", "L"), ("same", "*"), ("labels", "labels"),
                    ("table", "int64[:, :]"), ("sums", "float64[:]"), ("slab", "float[:, :, :]"), ("value", "value"),
                    ("i", "index"), ("rate", "rate"), ("flag", "bool")], writes=("out",))
    f4, f8, i8 = types.float32, types.float64, types.int64
    assert numba_signature(spec, "float32", star_rank=1).args == (
        types.Array(f4, 2, "C"), types.Array(f4, 1, "C"), types.Array(f4, 1, "C"), types.Array(f4, 1, "C"),
        types.Array(i8, 1, "C"), types.Array(i8, 2, "C"), types.Array(f8, 1, "C"), types.Array(f4, 3, "C"), f4, i8, f8,
        types.boolean)
    with pytest.raises(ValueError, match="unknown argument kinds"):
        ArgSpec([("table", "int32[:]")], writes=())
    typed = ArgSpec([("x", "NO"), ("table", "int64[:, :]"), ("slab", "float[:, :, :]")], writes=())

    def as_array(kernel, name, a, output):
        return a
    x = np.zeros((2, 3), np.float32)
    check_arrays("k", typed, (x, np.zeros((1, 5), np.int64), np.zeros((1, 3, 4), np.float32)), as_array, repr)
    table, slab = np.zeros((1, 5), np.int64), np.zeros((1, 3, 4), np.float32)
    for args, message in (((x, table.astype(np.int32), slab), "'table' must be an array of int64"),
                          ((x, table[0], slab), "'table' must be 2-D"),
                          ((x, table, slab.astype(np.float64)), "'slab' must be float32")):
        with pytest.raises(KernelArgumentError, match=message):
            check_arrays("k", typed, args, as_array, repr)
    codes = ArgSpec([("i", "index"), ("loss", "loss"), ("optimizer", "optimizer")], writes=())
    check_arrays("k", codes, (0, R.LOSS_HUBER, R.OPT_ADAGRAD), as_array, repr)
    for args, message in (((-1, 0, 0), "'i' must be >= 0"), ((0, 99, 0), "'loss' must be a loss code"),
                          ((0, 0, 99), "'optimizer' must be an optimizer code")):
        with pytest.raises(KernelArgumentError, match=message):
            check_arrays("k", codes, args, as_array, repr)
