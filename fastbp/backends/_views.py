"""The compiled loop's low-level intrinsics: views that cost no reference counting
(``borrowed`` and ``matrix``), and calls of kernels by address (``kernel_call_intrinsic``).

numba counts references to every array it holds: each slice, reshape, and each array a
function receives (a namedtuple argument counts every array in it) costs a call to
``NRT_incref`` and one to ``NRT_decref``, each an atomic add on the buffer's counter. The
loop's helpers take the grouped buffers (``Network``, ``Workspace``, ...) and cut views of
them for every op, a few hundred counter updates per step: 8.6% of a step of the small
network (64-32-10, batch 32) in a perf profile, and a C helper (``numba_attempt_nocopy_reshape``)
for every reshape, 1.4% more.

- ``borrowed(value)``: the same arrays (a namedtuple or tuple of them, recursively) with no
  reference to their owners. numba's increments and decrements of such an array are a test
  of a null pointer. Only for arrays whose owner outlives the compiled call: the loop's entry
  points borrow what their Python caller passes in and keeps, and never return an array
  (a borrowed array boxed to Python would not keep its memory alive).
- ``matrix(buf, start, n_rows, n_cols)``: the C-contiguous (n_rows, n_cols) view of
  ``buf[start:start + n_rows * n_cols]``, made in place: no bounds check (as the loop's
  slices, compiled with boundscheck off), no reshape helper.
- ``activation_extent``, ``dense_bias``, ``norm_statistics``, ...: ``lowering``'s functions that
  say where an op's views are, compiled for the loop; ``rows`` and ``dense_weight``, an
  activation's rows and a Dense layer's weight as ``matrix`` views.
- ``prefetch(arr, index, offset, locality)``: a hint to bring one cache line of ``arr[index]``
  into the caches ahead of its use (``llvm.prefetch``; never faults, whatever the address).
- ``kernel_call_intrinsic(signatures)``: the intrinsic by which the loop calls a kernel through
  its address in a table of ``_kernel_tables.TABLES``, so that the loop does not link the kernel's
  code (``_kernel_tables``' docstring says why); ``kernel_call_by_code_intrinsic``, one through the
  address a table holds for a run-time code (kernels compiled for one activation code each).
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils, errors
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from .. import lowering
from ..kernels._jit import jit

# lowering's view functions, compiled for the loop: inlined into the numba IR of each caller
# (numba's untyped inlining, as every helper of the loop). Made overloads inlined after typing
# (``overload(inline="always")``), they mixed up variables of one name across the loop's nested
# inlined functions, and an MPI rank's share of a batch came out with the whole batch's gradient.
activation_extent, dense_extent, dense_bias, norm_affine, norm_affine_grads, norm_statistics, norm_running = (
    jit(inline="always")(view) for view in (lowering.activation_extent, lowering.dense_extent, lowering.dense_bias,
                                             lowering.norm_affine, lowering.norm_affine_grads,
                                             lowering.norm_statistics, lowering.norm_running))


def _borrow(context, builder, ty, value):
    if isinstance(ty, types.Array):
        ary = context.make_array(ty)(context, builder, value)
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()
    if isinstance(ty, types.BaseTuple):
        for i, item_ty in enumerate(ty):
            item = _borrow(context, builder, item_ty, builder.extract_value(value, i))
            value = builder.insert_value(value, item, i)
    return value


@intrinsic
def borrowed(typingctx, value):
    """``value`` (an array, or a tuple or namedtuple holding arrays) with its arrays borrowed."""

    def codegen(context, builder, sig, args):
        return _borrow(context, builder, sig.args[0], args[0])

    return value(value), codegen


@intrinsic
def matrix(typingctx, buf, start, n_rows, n_cols):
    """The (n_rows, n_cols) C-contiguous view of the 1-d ``buf`` from element ``start`` on."""
    if not (isinstance(buf, types.Array) and buf.ndim == 1
            and all(isinstance(t, types.Integer) for t in (start, n_rows, n_cols))):
        return None
    result = types.Array(buf.dtype, 2, "C")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        at, rows, cols = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:]))
        out = context.make_array(result)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(buf.dtype)))
        context.populate_array(out, data=builder.gep(src.data, [at]), shape=[rows, cols],
                               strides=[builder.mul(cols, itemsize), itemsize], itemsize=itemsize,
                               meminfo=src.meminfo)
        return impl_ret_borrowed(context, builder, result, out._getvalue())

    return result(buf, start, n_rows, n_cols), codegen


@jit(inline="always")
def rows(buf, layout, cap, i, nb):
    """The first nb rows of activation i (or of its gradient, or dropout mask) in a flat buffer
    laid out as ``Workspace.acts`` (``lowering.activation_extent``)."""
    first, width = activation_extent(layout, cap, i)
    return matrix(buf, first, nb, width)


@jit(inline="always")
def dense_weight(flat, params, p):
    """Dense layer p's weight (fan_in, fan_out) in ``flat`` (theta or its gradient)."""
    start, _, n_in, n_out = dense_extent(params, p)
    return matrix(flat, start, n_in, n_out)


@intrinsic
def prefetch(typingctx, arr, index, offset, locality):
    """Prefetch the cache line holding byte ``offset`` of ``arr[index]`` (a row of a 2-d array,
    an element of a 1-d one), for reading. ``locality`` is ``llvm.prefetch``'s, a literal 0-3:
    3 keeps the line in every cache level (x86 ``prefetcht0``), 0 in none for long. Only a hint:
    an address past the array is not read, and no fault is possible."""
    if not (isinstance(arr, types.Array) and arr.ndim >= 1 and isinstance(index, types.Integer)
            and isinstance(offset, types.Integer) and isinstance(locality, types.IntegerLiteral)
            and 0 <= locality.literal_value <= 3):
        return None
    level = locality.literal_value

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        stride = cgutils.unpack_tuple(builder, ary.strides, arr.ndim)[0]
        at, off = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:3], sig.args[1:3]))
        byte_ptr = ir.IntType(8).as_pointer()
        address = builder.gep(builder.bitcast(ary.data, byte_ptr), [builder.add(builder.mul(at, stride), off)])
        i32 = ir.IntType(32)
        hint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
                                              "llvm.prefetch.p0i8")
        # read (0), the locality, data cache (1)
        builder.call(hint, [address, i32(0), i32(level), i32(1)])
        return context.get_dummy_value()

    return types.none(arr, index, offset, locality), codegen


def _kernel_call(context, builder, address, arg_tys, args):
    """Call the function at ``address`` (an integer) with numba's calling convention; errors propagate."""
    fnty = context.call_conv.get_function_type(types.none, arg_tys)
    fn = builder.inttoptr(address, fnty.as_pointer())
    status, _ = context.call_conv.call_function(builder, fn, types.none, arg_tys, args)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return context.get_dummy_value()


def _table_call(table, name, args, signatures):
    """(the index of field ``name`` in the namedtuple type ``table``, the argument types of a call
    of it with the tuple type ``args``), or None where these types are no such call; TypingError
    unless the argument types are one of ``signatures(table_class, name)``."""
    if not (isinstance(table, types.BaseNamedTuple) and isinstance(name, types.StringLiteral)
            and isinstance(args, types.BaseTuple)):
        return None
    field = name.literal_value
    index = table.fields.index(field)
    if not isinstance(table.types[index], types.Integer):
        return None
    arg_tys = tuple(args.types)
    allowed = [tuple(s.args) for s in signatures(table.instance_class, field)]
    if arg_tys not in allowed:
        raise errors.TypingError(f"kernel {field!r} called with {arg_tys}; its table holds it for {allowed}")
    return index, arg_tys


def kernel_call_intrinsic(signatures):
    """An intrinsic ``call(table, name, args)``: the kernel at ``table.<name>`` (an address, see
    ``_kernel_tables.kernel_table``) called with the tuple ``args``, whose types must be one of
    ``signatures(table_class, name)`` (numba signatures): checked when the caller compiles,
    since a call through an address with other types would be undefined."""

    @intrinsic
    def call(typingctx, table, name, args):
        typed = _table_call(table, name, args, signatures)
        if typed is None:
            return None
        index, arg_tys = typed

        def codegen(context, builder, sig, llargs):
            values = cgutils.unpack_tuple(builder, llargs[2], len(arg_tys))
            address = builder.extract_value(llargs[0], index)
            return _kernel_call(context, builder, address, arg_tys, values)

        return types.none(table, name, args), codegen

    return call


def kernel_call_by_code_intrinsic(signatures):
    """An intrinsic ``call(addresses, table, name, code, args)``: as ``kernel_call_intrinsic``'s, for
    a kernel compiled for one activation code. ``table.<name>`` holds a row of ``addresses`` (a 2-d
    int64 array, one column per code) and the kernel is the one at column ``code`` (the op's code
    at run time). A row or code out of the array, or a zero address (no kernel compiled for that
    code), raises RuntimeError instead of calling anything."""

    @intrinsic
    def call(typingctx, addresses, table, name, code, args):
        if not (isinstance(addresses, types.Array) and addresses.ndim == 2 and addresses.layout == "C"
                and addresses.dtype == types.int64 and isinstance(code, types.Integer)):
            return None
        typed = _table_call(table, name, args, signatures)
        if typed is None:
            return None
        index, arg_tys = typed
        field = name.literal_value

        def codegen(context, builder, sig, llargs):
            array = context.make_array(addresses)(context, builder, llargs[0])
            n_rows, n_codes = cgutils.unpack_tuple(builder, array.shape, 2)
            row = context.cast(builder, builder.extract_value(llargs[1], index), table.types[index], types.intp)
            at = context.cast(builder, llargs[3], sig.args[3], types.intp)
            inside = builder.and_(builder.icmp_unsigned("<", row, n_rows), builder.icmp_unsigned("<", at, n_codes))
            with cgutils.if_unlikely(builder, builder.not_(inside)):
                context.call_conv.return_user_exc(builder, RuntimeError,
                                                  (f"fastbp: no {field!r} kernel for this code",))
            address = builder.load(builder.gep(array.data, [builder.add(builder.mul(row, n_codes), at)]))
            with cgutils.if_unlikely(builder, cgutils.is_null(builder, address)):
                context.call_conv.return_user_exc(
                    builder, RuntimeError, (f"fastbp: the {field!r} kernel of this code is not in the table",))
            values = cgutils.unpack_tuple(builder, llargs[4], len(arg_tys))
            return _kernel_call(context, builder, address, arg_tys, values)

        return types.none(addresses, table, name, code, args), codegen

    return call
