"""``flat(a)``: all of an array's elements as a 1-d array, for the kernels' elementwise loops.

numba's ``a.ravel()`` and ``a.reshape(a.size)`` call its C helper ``numba_attempt_nocopy_reshape``
on every call, even for a C-contiguous array, whose flat view needs no search: the helper was 2.3%
of the 16-16-2 network's step (batch 16) in a perf profile, where the softmax's exponentials and
the optimizer's update took four flat views a step. ``flat`` makes the view of a C-contiguous
array in place, and is ``a.ravel()`` for any other layout (a copy, as before).

numba's parallel passes must know that the view aliases its array, as they know it of ``ravel``:
a ``prange`` loop that writes only to an array they take for a fresh one is dead code to them,
and they removed the whole update of a parallel optimizer kernel. ``flat`` is registered with
their alias analysis (``numba.core.ir_utils.alias_func_extensions``) below.
"""
from numba import types
from numba.core import ir_utils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic


@intrinsic
def flat(typingctx, a):
    """All of ``a``'s elements, 1-d: a view when ``a`` is typed C-contiguous, else ``a.ravel()``."""
    if not isinstance(a, types.Array):
        return None
    # a's type, 1-d and C-contiguous: read-only stays read-only, so that numba refuses to compile
    # a write through the view, as it refuses one through a.ravel().
    result = a.copy(ndim=1, layout="C")

    def codegen(context, builder, sig, args):
        if a.layout != "C":
            return context.compile_internal(builder, lambda arr: arr.ravel(), sig, args)
        src = context.make_array(sig.args[0])(context, builder, args[0])
        out = context.make_array(result)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(a.dtype)))
        context.populate_array(out, data=src.data, shape=[src.nitems], strides=[itemsize], itemsize=itemsize,
                               meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, result, out._getvalue())

    return result(a), codegen


def _flat_aliases(lhs, args, alias_map, arg_aliases):
    ir_utils._add_alias(lhs, args[0].name, alias_map, arg_aliases)


# Keyed as numba's ``find_callname`` names a call of this intrinsic: its name and its module.
ir_utils.alias_func_extensions[(flat._name, flat._defn.__module__)] = _flat_aliases
