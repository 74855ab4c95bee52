"""``dz(code, dout, y, z, alpha)``: dout * f'(z) of an elementwise activation, in dout's dtype.

The shared scalar formulas (``kernels/_scalar.py``) compute in float64 (their float literals), and
a float32 loop that carried that on converted every element to float64 and back, in half-width
vectors. For the identity and ReLU, the codes the kernels copy their loops for, ``dz`` skips the
dispatcher and computes in dout's dtype with the same bits: dout * 1 and dout * 0 are exact in
either width, and a float32 sum of such products rounds to the same bits as the float64 sum of
the same two values rounded back. One difference: LLVM folds the product by 1, so a signalling
NaN in dout comes out unquieted where the widening quieted it (NaN either way; a fit's gradients,
made by arithmetic, never hold one). Other codes take the dispatcher and are cast back.

Measured where it was introduced: BatchNorm's backward on (128, 512) took 93-113 us through the
always-inlined dispatcher against 65 us, LayerNorm's with ReLU 322 -> 125 us; a Dense layer's
ReLU backward pass (``dense.py``) 16 x 16 x 16 280 -> 205 ns.
"""
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .._scalar import IDENTITY, RELU, activate_dz, relu_grad


def dz(code, dout, y, z, alpha):
    """dout * f'(z) for the elementwise ``code``, from the output y or the input z, in dout's dtype."""
    return type(dout)(activate_dz(code, dout, y, z, alpha))


@overload(dz, inline="always", prefer_literal=True)
def _dz_typed(code, dout, y, z, alpha):
    cast = as_dtype(dout).type

    def impl(code, dout, y, z, alpha):
        if code == IDENTITY:
            return dout
        if code == RELU:
            return dout * cast(relu_grad(y))
        return cast(activate_dz(code, dout, y, z, alpha))
    return impl
