"""The case table of the rule contract: for every registered op type, how to build it.

A case's ``build(*paired)`` receives one paired tensor per varying input (foreground rows
then reference rows, batch axis first) and returns the output tensor, or a list of them,
with the batch axis first. Constants come from :func:`const`, seeded, in the inputs'
dtype, so that the float32 and float64 graphs and the eager reference see the same
weights. ``expect`` is what the rule's plan must answer for the op: ``"keep"`` (TensorFlow's
gradient, linear) or ``"tfshap"`` (a tfshap gradient installed on the op).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

#: Foreground rows per case; the paired batch has twice as many.
N = 3


@dataclass(frozen=True)
class Arg:
    """A varying input: its shape without the batch axis, and the domain its values come from."""

    shape: tuple[int, ...]
    domain: str = "normal"


@dataclass(frozen=True)
class Case:
    op_type: str
    name: str
    build: Callable
    args: tuple[Arg, ...]
    expect: str
    #: Builds the same function with TensorFlow's true gradient (for ``x == r``) where
    #: ``build`` itself has none (stop_gradient is the identity of the forward function).
    twin: Callable | None = None
    dtypes: tuple[str, ...] = ("float64", "float32")
    #: False for an op that reorders rows (within each half): then only the total sums.
    rowwise: bool = True
    #: Nondecreasing in every input: the multipliers of the sum of the outputs are >= 0.
    monotone: bool = False
    #: The rule set the case is rewritten with (``tfshap.compile(..., rules=)``).
    rules: str = "default"

    @property
    def id(self) -> str:
        return f"{self.op_type}-{self.name}" + ("" if self.rules == "default" else f"@{self.rules}")


def const(like: tf.Tensor, shape, seed: int, low: float = -1.0, high: float = 1.0) -> tf.Tensor:
    """A seeded constant of ``shape`` in ``like``'s dtype (the same values in every trace)."""
    values = np.random.default_rng(seed).uniform(low, high, shape)
    return tf.constant(values, like.dtype)


def batch_shape(x: tf.Tensor, *rest: int) -> tf.Tensor:
    """``[batch, *rest]`` as a tensor; the batch size comes from a Shape op, which never varies."""
    return tf.concat([tf.shape(x)[:1], tf.constant(rest, tf.int32)], 0)


def _batch_constant(x, shape, seed):
    """A seeded constant repeated for every row (the same in both halves of the pair)."""
    return tf.broadcast_to(const(x, shape, seed), batch_shape(x, *shape))


# ---------------------------------------------------------------------------------------
# data


def sample(args: tuple[Arg, ...], seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Foreground and reference values (float64) for each varying input, from its domain."""
    rng = np.random.default_rng(seed)
    xs, rs = [], []
    for arg in args:
        both = _domain(arg.domain, (2 * N, *arg.shape), rng)
        xs.append(both[:N])
        rs.append(both[N:])
    return xs, rs


def _domain(domain: str, shape, rng) -> np.ndarray:
    if domain == "normal":
        return rng.normal(size=shape)
    if domain == "positive":  # Log, Sqrt, Rsqrt, Reciprocal, Pow's base
        return rng.uniform(0.5, 2.0, shape)
    if domain == "unit":  # Tan and friends: well inside (-π/2, π/2)
        return rng.uniform(-1.2, 1.2, shape)
    if domain == "wide":  # Relu6 on both sides of 0 and 6
        return rng.uniform(-3.0, 9.0, shape)
    if domain == "nonzero":  # denominators
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
    if domain == "some_zero":  # DivNoNan denominators, about a third of them exactly 0
        values = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
        return np.where(rng.uniform(size=shape) < 0.35, 0.0, values)
    if domain in ("distinct", "distinct tiny"):
        # No two values equal, foreground and reference together, spaced far beyond
        # float32 rounding: max, min and pooling have no ties to break.
        size = int(np.prod(shape))
        grid = (rng.permutation(size) + 0.5) / size * 4.0 - 2.0
        return grid.reshape(shape) * (1e-7 if domain == "distinct tiny" else 1.0)
    if domain == "small":
        # A small variance, as rsqrt(var + eps) sees it: its changes are far below 32 ulps of 1 in
        # float32 (3.8e-6), and far above the values' own rounding, where rsqrt is steep and curved.
        return rng.uniform(1e-6, 4e-6, shape)
    if domain == "padded":
        # Positive values with the last step along axis 1 exactly 0 in every row: a mask
        # computed from them is the same for the foreground and the reference half.
        values = rng.uniform(0.5, 2.0, shape)
        values[:, -1] = 0.0
        return values
    raise ValueError(f"unknown domain {domain!r}")


# ---------------------------------------------------------------------------------------
# the table

CASES: list[Case] = []


def case(op_type, name, build, *args, expect="keep", **kwargs) -> None:
    args = tuple(a if isinstance(a, Arg) else Arg(tuple(a)) for a in args)
    CASES.append(Case(op_type, name, build, args, expect, **kwargs))


def A(*shape: int, domain: str = "normal") -> Arg:
    return Arg(tuple(shape), domain)


# --- linear: every input --------------------------------------------------------------
case("Identity", "identity", lambda x: tf.identity(x), A(3))
case("EnsureShape", "ensure_shape", lambda x: tf.ensure_shape(x, [None, 2, 3]), A(2, 3))
case("CheckNumerics", "check_numerics", lambda x: tf.debugging.check_numerics(x, "bad"), A(3))
case("AddV2", "both", lambda x, y: x + y, A(3), A(3))
case("AddV2", "bcast n3 n1", lambda x, y: x + y, A(3), A(1))
case("AddV2", "bcast n3 const3", lambda x: x + const(x, [3], 1), A(3))
case("Add", "both", lambda x, y: tf.raw_ops.Add(x=x, y=y), A(3), A(3))
case("Sub", "both", lambda x, y: x - y, A(3), A(3))
case("Sub", "bcast n1 n3", lambda x, y: x - y, A(1), A(3))
case("Sub", "const minus x", lambda x: const(x, [1, 3], 2) - x, A(3))
case("Neg", "neg", lambda x: -x, A(3))
case("AddN", "three", lambda x, y: tf.add_n([x, y, x]), A(3), A(3))
case("BiasAdd", "nhwc", lambda x: tf.nn.bias_add(x, const(x, [3], 3)), A(2, 3))
case("BiasAddV1", "v1", lambda x: tf.raw_ops.BiasAddV1(value=x, bias=const(x, [3], 4)), A(3))
case("Sum", "axis 1", lambda x: tf.reduce_sum(x, 1), A(3, 4))
case("Sum", "axes 1 2 keepdims", lambda x: tf.reduce_sum(x, [1, 2], keepdims=True), A(3, 4))
case("Mean", "axis -1", lambda x: tf.reduce_mean(x, -1), A(3, 4))
case("Sum", "no axes", lambda x: tf.reduce_sum(x, []), A(3))
case("Cumsum", "exclusive reverse", lambda x: tf.cumsum(x, 1, exclusive=True, reverse=True), A(4))
case("ConcatV2", "both", lambda x, y: tf.concat([x, y], 1), A(3), A(2))
case("ConcatV2", "with const", lambda x: tf.concat([_batch_constant(x, [2], 5), x], 1), A(3))
case("Pack", "axis 1", lambda x, y: tf.stack([x, y], 1), A(3), A(3))
case("Unpack", "axis 1", lambda x: tf.unstack(x, axis=1), A(3, 2))
case("Tile", "columns", lambda x: tf.tile(x, [1, 2]), A(3))
case("BroadcastTo", "n1 to n3", lambda x: tf.broadcast_to(x, batch_shape(x, 3)), A(1))
case("AvgPool", "2x2 valid", lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID"), A(4, 4, 2))
case("AvgPool", "3x3 same", lambda x: tf.nn.avg_pool2d(x, 3, 2, "SAME"), A(5, 5, 2))
case("AvgPool3D", "2 valid", lambda x: tf.nn.avg_pool3d(x, 2, 2, "VALID"), A(4, 4, 4, 1), dtypes=("float32",))

# --- linear: the data input -----------------------------------------------------------
case("Reshape", "flatten", lambda x: tf.reshape(x, [-1, 6]), A(2, 3))
case("ExpandDims", "axis -1", lambda x: tf.expand_dims(x, -1), A(3))
case("Squeeze", "axis 2", lambda x: tf.squeeze(x, 2), A(3, 1))
case("Transpose", "0 2 1", lambda x: tf.transpose(x, [0, 2, 1]), A(2, 3))
case("Slice", "columns", lambda x: tf.slice(x, [0, 1], [-1, 2]), A(4))
case("StridedSlice", "reversed step", lambda x: x[:, ::-2, 1:], A(4, 3))
case("Pad", "columns", lambda x: tf.pad(x, [[0, 0], [1, 2]]), A(3))
case("PadV2", "constant value", lambda x: tf.pad(x, [[0, 0], [2, 1]], constant_values=0.5), A(3))
case("MirrorPad", "reflect", lambda x: tf.pad(x, [[0, 0], [2, 1]], mode="REFLECT"), A(4))
case("MirrorPad", "symmetric", lambda x: tf.pad(x, [[0, 0], [1, 0], [0, 2]], mode="SYMMETRIC"), A(3, 3))
case("ReverseV2", "axis 1", lambda x: tf.reverse(x, [1]), A(4))
case("Roll", "axis 1", lambda x: tf.roll(x, 3, axis=1), A(4))
case("Roll", "two axes, negative shift", lambda x: tf.roll(x, [1, -2], axis=[1, 2]), A(3, 4))  # Swin's shifted windows


def _fourier(transform, inverse=False):
    """Re(transform(x + 0i)); Im too for the inverses (whose input is complex): linear over the reals."""
    def build(x, y=None):
        z = transform(tf.complex(x, tf.zeros_like(x) if y is None else y))
        return [tf.math.real(z), tf.math.imag(z)] if inverse else tf.math.real(z)

    return build


case("Complex", "real and imaginary parts",
     lambda x, y: tf.math.imag(tf.complex(x, y)) + tf.math.real(tf.complex(y, x)), A(3), A(3))
case("Real", "of a complex", lambda x, y: tf.math.real(tf.complex(x, y)), A(3), A(3))
case("Imag", "of a complex", lambda x, y: tf.math.imag(tf.complex(x, y)) * 2.0, A(3), A(3))
case("FFT", "rows", _fourier(tf.signal.fft), A(4))
case("FFT2D", "FNet's mixing", _fourier(tf.signal.fft2d), A(3, 4))
case("FFT3D", "volume", _fourier(tf.signal.fft3d), A(2, 2, 3))
case("IFFT", "complex rows", _fourier(tf.signal.ifft, inverse=True), A(4), A(4))
case("IFFT2D", "complex", _fourier(tf.signal.ifft2d, inverse=True), A(2, 3), A(2, 3))
case("IFFT3D", "complex", _fourier(tf.signal.ifft3d, inverse=True), A(2, 2, 2), A(2, 2, 2))
case("RFFT", "real and imaginary parts",
     lambda x: [tf.math.real(tf.signal.rfft(x)), tf.math.imag(tf.signal.rfft(x))], A(6))
case("IRFFT", "half spectrum", lambda x, y: tf.signal.irfft(tf.complex(x, y)), A(4), A(4))


def _scatter(op):
    # SAM3's concatenation of padded sequences: rows (per sample) written into a flattened (batch · length, d).
    def build(x, u):
        n = tf.shape(x)[0]
        flat = tf.reshape(x, [-1, 2])
        rows = tf.reshape(tf.range(n)[:, None] * 3 + [[1]], [-1, 1])
        return tf.reshape(op(flat, rows, tf.reshape(u, [-1, 2])), [n, 6])

    return build


case("TensorScatterUpdate", "one row per sample", _scatter(tf.tensor_scatter_nd_update), A(6), A(2))
case("TensorScatterAdd", "one row per sample", _scatter(tf.tensor_scatter_nd_add), A(6), A(2))
case("SpaceToBatchND", "dilated convolution",
     lambda x: tf.nn.atrous_conv2d(x, const(x, [3, 3, 2, 2], 38), 2, "SAME"), A(5, 5, 2))
case("BatchToSpaceND", "dilated depthwise convolution",
     lambda x: tf.nn.depthwise_conv2d(x, const(x, [3, 3, 2, 1], 39), [1, 1, 1, 1], "SAME", dilations=[2, 2]),
     A(5, 5, 2))
case("DepthToSpace", "block 2", lambda x: tf.nn.depth_to_space(x, 2), A(2, 2, 4))
case("SpaceToDepth", "block 2", lambda x: tf.nn.space_to_depth(x, 2), A(4, 4, 2))
case(
    "ResizeNearestNeighbor",
    "3 to 5",
    lambda x: tf.raw_ops.ResizeNearestNeighbor(images=x, size=[5, 5], half_pixel_centers=True),
    A(3, 3, 2),
)
case(
    "ResizeBilinear",
    "3 to 5",
    lambda x: tf.raw_ops.ResizeBilinear(images=x, size=[5, 5], half_pixel_centers=True),
    A(3, 3, 2),
)
case(
    "ExtractImagePatches",
    "2x2",
    lambda x: tf.image.extract_patches(x, [1, 2, 2, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID"),
    A(3, 3, 2),
)
case(
    "ExtractVolumePatches",
    "2x2x2",
    lambda x: tf.extract_volume_patches(x, [1, 2, 2, 2, 1], [1, 1, 1, 1, 1], "VALID"),
    A(3, 3, 3, 1),
)


def _gather_rows(x):
    # Gather (v1) takes rows: reorder each half the same way, so pairs stay pairs.
    n = x.shape[0] // 2
    order = np.array([2, 0, 1])[:n]
    return tf.raw_ops.Gather(params=x, indices=tf.constant(np.concatenate([order, order + n]), tf.int32))


def _gather_nd(x):
    # One column per row, the same for a row's foreground and its reference.
    rows = x.shape[0]
    columns = np.tile(np.array([3, 0, 2])[: rows // 2], 2)
    indices = np.stack([np.arange(rows), columns], -1)
    return tf.raw_ops.GatherNd(params=x, indices=tf.constant(indices, tf.int32))


case("Gather", "rows within halves", _gather_rows, A(3), rowwise=False)
case("GatherV2", "axis 1", lambda x: tf.gather(x, [2, 0, 1, 1], axis=1), A(3))
case("GatherV2", "batch_dims 1",
     lambda x: tf.gather(x, tf.zeros([N * 2, 2], tf.int32) + [1, 2], axis=1, batch_dims=1), A(3, 2))
case("GatherNd", "row and column", _gather_nd, A(4, 2))
case("Split", "two", lambda x: tf.split(x, 2, axis=1), A(4))
case("SplitV", "1 and 3", lambda x: tf.split(x, [1, 3], axis=1), A(4))


def _condition(x):
    return tf.broadcast_to(tf.constant([True, False, True]), tf.shape(x))


case("Select", "constant condition", lambda x, y: tf.raw_ops.Select(condition=_condition(x), x=x, y=y), A(3), A(3))
case("SelectV2", "constant condition", lambda x, y: tf.where([True, False, True], x, y), A(3), A(3))
case("SelectV2", "one varying", lambda x: tf.where([False, True, True], x, const(x, [3], 6)), A(3))

# --- masks: the same for both halves of the pair (checked at run time) -----------------
def P(*shape: int) -> Arg:
    """Positive values padded with exact zeros at the last step: a shared mask."""
    return A(*shape, domain="padded")


def _masked(keep):
    return lambda x: tf.where(keep(x), x * x, tf.zeros_like(x))


case("Equal", "padding", _masked(lambda x: tf.logical_not(tf.equal(x, 0.0))), P(4))
case("NotEqual", "padding", _masked(lambda x: tf.not_equal(x, 0.0)), P(4))
case("Greater", "positive", _masked(lambda x: x > 0.0), P(4))
case("GreaterEqual", "positive", _masked(lambda x: x >= 0.1), P(4))
case("Less", "padding", _masked(lambda x: tf.logical_not(x < 0.1)), P(4))
case("LessEqual", "padding", _masked(lambda x: tf.logical_not(x <= 0.0)), P(4))
case("IsNan", "none", _masked(lambda x: tf.logical_not(tf.math.is_nan(x))), A(3))
case("IsInf", "none", _masked(lambda x: tf.logical_not(tf.math.is_inf(x))), A(3))
case("IsFinite", "all", _masked(lambda x: tf.math.is_finite(x)), A(3))
case("LogicalNot", "padding", _masked(lambda x: tf.logical_not(tf.equal(x, 0.0))), P(4))
case("LogicalAnd", "two masks", lambda x, y: tf.where(tf.logical_and(x > 0, y > 0), x * y, y), P(4), P(4))
case("LogicalOr", "two masks", lambda x, y: tf.where(tf.logical_or(x > 0, y > 0), x * y, y), P(4), P(4))
case("Any", "per row", lambda x: x * tf.cast(tf.reduce_any(x > 0, -1, keepdims=True), x.dtype), P(3, 2))
case("All", "per row", lambda x: x * tf.cast(tf.reduce_all(x > -1, -1, keepdims=True), x.dtype), P(3, 2))
case("Cast", "mask to float", lambda x: tf.tanh(x) * tf.cast(tf.not_equal(x, 0.0), x.dtype), P(4), expect="tfshap")
case("Select", "varying condition",
     lambda x: tf.raw_ops.Select(condition=x > 0, x=tf.exp(x), y=x), P(3), expect="tfshap")
case("SelectV2", "varying condition, broadcast branch",
     lambda x: tf.where(x > 0, x, const(x, [4], 11)), P(4), expect="tfshap")
# the condition switches between the halves: Δy goes through one branch
case("SelectV2", "leaky relu by where", lambda x: tf.where(x > 0, x, 0.1 * x), A(4), expect="tfshap")
case("SelectV2", "switch to a constant",
     lambda x: tf.where(x > 0, tf.tanh(x), const(x, [4], 12)), A(4), expect="tfshap")
case("Select", "two varying branches",
     lambda x, y: tf.raw_ops.Select(condition=x > y, x=x * y, y=tf.sigmoid(y)), A(3), A(3), expect="tfshap")

# --- linear: one operand constant -----------------------------------------------------
case("Conv2D", "3x3 same", lambda x: tf.nn.conv2d(x, const(x, [3, 3, 2, 4], 7), 1, "SAME"), A(5, 5, 2))
case("Conv2D", "2x2 stride 2 valid", lambda x: tf.nn.conv2d(x, const(x, [2, 2, 2, 3], 8), 2, "VALID"), A(5, 5, 2))
case("Conv3D", "2x2x2 same", lambda x: tf.nn.conv3d(x, const(x, [2, 2, 2, 1, 2], 9), [1] * 5, "SAME"), A(3, 3, 3, 1))
case(
    "DepthwiseConv2dNative",
    "3x3 multiplier 2",
    lambda x: tf.nn.depthwise_conv2d(x, const(x, [3, 3, 2, 2], 10), [1, 1, 1, 1], "SAME"),
    A(4, 4, 2),
)
case(
    "Conv2DBackpropInput",
    "transpose stride 2",
    lambda x: tf.nn.conv2d_transpose(x, const(x, [3, 3, 2, 4], 11), batch_shape(x, 6, 6, 2), 2, "SAME"),
    A(3, 3, 4),
)
case(
    "Conv3DBackpropInputV2",
    "transpose stride 2",
    lambda x: tf.nn.conv3d_transpose(
        x, const(x, [2, 2, 2, 1, 2], 12), batch_shape(x, 4, 4, 4, 1), [1, 2, 2, 2, 1], "SAME"
    ),
    A(2, 2, 2, 2),
)
case("MatMul", "x W", lambda x: tf.matmul(x, const(x, [4, 3], 13)), A(4))
case("MatMul", "x W^T", lambda x: tf.matmul(x, const(x, [3, 4], 14), transpose_b=True), A(4))


case("BatchMatMul", "v1", lambda x: tf.raw_ops.BatchMatMul(x=x, y=_batch_constant(x, [4, 2], 15)), A(3, 4))
case("BatchMatMulV2", "x W", lambda x: tf.matmul(x, const(x, [4, 2], 16)), A(3, 4))
case("BatchMatMulV2", "W x", lambda x: tf.matmul(const(x, [3, 3], 17), x), A(3, 4))
case("BatchMatMulV3", "x W", lambda x: tf.raw_ops.BatchMatMulV3(x=x, y=const(x, [4, 2], 18), Tout=x.dtype), A(3, 4))
case("Einsum", "nij,jk", lambda x: tf.einsum("nij,jk->nik", x, const(x, [4, 2], 19)), A(3, 4))
case("Einsum", "jk,nij", lambda x: tf.einsum("jk,nij->nki", const(x, [4, 2], 20), x), A(3, 4))


def _batch_norm(version):
    def build(x):
        args = dict(
            x=x,
            scale=const(x, [3], 21, 0.5, 2.0),
            offset=const(x, [3], 22),
            mean=const(x, [3], 23),
            variance=const(x, [3], 24, 0.5, 2.0),
            epsilon=1e-3,
            is_training=False,
        )
        return getattr(tf.raw_ops, version)(**args)[0]

    return build


# The fused batch norm kernels take float32 (or half) only.
for _version in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"):
    case(_version, "inference", _batch_norm(_version), A(2, 2, 3), dtypes=("float32",))

# --- bilinear: both operands vary (each gets the gradient at the other's midpoint) -----
_T = "tfshap"
case("BatchMatMul", "both", lambda x, y: tf.raw_ops.BatchMatMul(x=x, y=y), A(3, 4), A(4, 2), expect=_T)
case("BatchMatMulV2", "both", tf.matmul, A(3, 4), A(4, 2), expect=_T)
case("BatchMatMulV2", "x x^T", lambda x: tf.matmul(x, x, transpose_b=True), A(3, 4), expect=_T)
case("BatchMatMulV2", "adjoint a", lambda x, y: tf.matmul(x, y, adjoint_a=True), A(4, 3), A(4, 2), expect=_T)
case("BatchMatMulV2", "bcast heads", tf.matmul, A(1, 3, 4), A(2, 4, 2), expect=_T)
case("BatchMatMulV3", "both",
     lambda x, y: tf.raw_ops.BatchMatMulV3(x=x, y=y, Tout=x.dtype), A(3, 4), A(4, 2), expect=_T)
_EINSUMS = {
    # equation: the operands' shapes without the batch axis
    "nij,njk->nik": ((3, 4), (4, 2)),
    "ni,nj->nij": ((3,), (2,)),
    "nij,nij->n": ((2, 3), (2, 3)),
    "...ij,...jk->...ik": ((2, 3, 4), (1, 4, 2)),
    # tf_keras MultiHeadAttention: scores and combination, 1-D and 2-D attention axes
    "aecd,abcd->acbe": ((3, 2, 4), (3, 2, 4)),
    "acbe,aecd->abcd": ((2, 3, 3), (3, 2, 4)),
    "afgde,abcde->adbcfg": ((2, 2, 2, 3), (2, 2, 2, 3)),
    # Keras 3 dot_product_attention
    "BTNH,BSNH->BNTS": ((3, 2, 4), (3, 2, 4)),
    "BNTS,BSNH->BTNH": ((2, 3, 3), (3, 2, 4)),
}
for _equation, (_a, _b) in _EINSUMS.items():
    case("Einsum", _equation, lambda x, y, eq=_equation: tf.einsum(eq, x, y), A(*_a), A(*_b), expect=_T)
case("Einsum", "x with itself bsd,btd->bst", lambda x: tf.einsum("bsd,btd->bst", x, x), A(3, 4), expect=_T)


# --- normalization: a fused batch norm computing per-sample moments (tf_keras LayerNormalization)
def _fused_layer_norm(version, first_axis, hw=None):
    """tf_keras's fused LayerNormalization over the axes from ``first_axis``: NCHW ``[1, rows, features, 1]``."""

    def build(x):
        shape = tf.shape(x)
        rows, features = tf.reduce_prod(shape[:first_axis]), tf.reduce_prod(shape[first_axis:])
        target = tf.stack([1, rows, features, 1]) if hw is None else tf.constant([1, -1, *hw], tf.int32)
        channels = tf.reshape(x, target)
        n = tf.shape(channels)[1:2]
        y = getattr(tf.raw_ops, version)(
            x=channels, scale=tf.ones(n, x.dtype), offset=tf.zeros(n, x.dtype), mean=tf.zeros([0], x.dtype),
            variance=tf.zeros([0], x.dtype), epsilon=1e-3, is_training=True, data_format="NCHW",
        )[0]
        return tf.reshape(y, shape) * const(x, x.shape[1:], 34, 0.5, 2.0) + const(x, x.shape[1:], 35)

    return build


for _version in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"):
    case(_version, "layer norm last axis", _fused_layer_norm(_version, 2), A(4, 5), expect=_T, dtypes=("float32",))
case("FusedBatchNormV3", "layer norm last two axes",
     _fused_layer_norm("FusedBatchNormV3", 1), A(3, 4), expect=_T, dtypes=("float32",))
case("FusedBatchNormV3", "layer norm H and W",
     _fused_layer_norm("FusedBatchNormV3", 1, hw=(2, 5)), A(4, 5), expect=_T, dtypes=("float32",))

case("Cast", "to float64", lambda x: tf.raw_ops.Cast(x=x, DstT=tf.float64), A(3))

# --- linear: the identity in the forward pass, with a tfshap pass-through gradient ------
case("IdentityN", "two tensors", lambda x, y: tf.identity_n([x, y]), A(3), A(2), expect="tfshap")
# tf.nn.silu is a tf.custom_gradient: Sigmoid and Mul inside an IdentityN whose captured
# gradient skips them; the pass-through sends the multipliers through their rules.
case("IdentityN", "silu custom_gradient", lambda x: tf.nn.silu(x), A(3), expect="tfshap")
case("StopGradient", "identity forward", lambda x: tf.stop_gradient(x), A(3), expect="tfshap", twin=tf.identity)
case("Snapshot", "identity forward", lambda x: tf.raw_ops.Snapshot(input=x), A(3), expect="tfshap", twin=tf.identity)
case(
    "PreventGradient",
    "identity forward",
    lambda x: tf.raw_ops.PreventGradient(input=x),
    A(3),
    expect="tfshap",
    twin=tf.identity,
)

# --- rescale: unary elementwise -------------------------------------------------------
_UNARY = {
    "Relu": (tf.nn.relu, "normal"),
    "Relu6": (tf.nn.relu6, "wide"),
    "LeakyRelu": (lambda x: tf.nn.leaky_relu(x, 0.2), "normal"),
    "Elu": (tf.nn.elu, "normal"),
    "Selu": (tf.nn.selu, "normal"),
    "Sigmoid": (tf.sigmoid, "normal"),
    "Tanh": (tf.tanh, "normal"),
    "Softplus": (tf.nn.softplus, "normal"),
    "Softsign": (tf.nn.softsign, "normal"),
    "Exp": (tf.exp, "normal"),
    "Expm1": (tf.math.expm1, "normal"),
    "Log": (tf.math.log, "positive"),
    "Log1p": (tf.math.log1p, "positive"),
    "Sqrt": (tf.sqrt, "positive"),
    "Rsqrt": (tf.math.rsqrt, "positive"),
    "Square": (tf.square, "normal"),
    "Abs": (tf.abs, "normal"),
    "Erf": (tf.math.erf, "normal"),
    "Erfc": (tf.math.erfc, "normal"),
    "Reciprocal": (tf.math.reciprocal, "positive"),
    "Inv": (lambda x: tf.raw_ops.Inv(x=x), "nonzero"),
    "Sin": (tf.sin, "normal"),
    "Cos": (tf.cos, "normal"),
    "Tan": (tf.tan, "unit"),
    "Atan": (tf.atan, "normal"),
    "Asinh": (tf.asinh, "normal"),
    "Sinh": (tf.sinh, "normal"),
    "Cosh": (tf.cosh, "normal"),
    "Sign": (tf.sign, "normal"),
    "Floor": (lambda x: tf.floor(2 * x), "normal"),
    "Ceil": (lambda x: tf.math.ceil(2 * x), "normal"),
    "Round": (lambda x: tf.round(2 * x), "normal"),
}
_INCREASING = {
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Exp", "Expm1",
    "Log", "Log1p", "Sqrt", "Erf", "Atan", "Asinh", "Sinh", "Sign", "Floor", "Ceil", "Round",
}
for _op_type, (_fn, _domain_name) in _UNARY.items():
    case(_op_type, _domain_name, _fn, A(2, 3, domain=_domain_name), expect="tfshap", monotone=_op_type in _INCREASING)
# Small values: Δx is no rounding noise because it is below 32 ulps of 1 (float32 tracks float64).
case("Rsqrt", "small variance", tf.math.rsqrt, A(2, 3, domain="small"), expect="tfshap")
case("Log", "small", tf.math.log, A(2, 3, domain="small"), expect="tfshap", monotone=True)

# --- two-player Shapley: binary elementwise ---------------------------------------------
case("Mul", "both", lambda x, y: x * y, A(3), A(3), expect="tfshap")
case("Mul", "bcast n3 n1", lambda x, y: x * y, A(3), A(1), expect="tfshap")
case("Mul", "bcast n1 n3", lambda x, y: x * y, A(1), A(3), expect="tfshap")
case("Mul", "square x*x", lambda x: x * x, A(3), expect="tfshap")
case("Mul", "const n3 x 3", lambda x: x * const(x, [3], 25), A(3))
case("Mul", "const 1 x n3", lambda x: const(x, [1, 3], 26) * x, A(3))
case("RealDiv", "both", lambda x, y: x / y, A(3), A(3, domain="positive"), expect="tfshap")
case("RealDiv", "bcast n3 n1", lambda x, y: x / y, A(3), A(1, domain="nonzero"), expect="tfshap")
case("RealDiv", "const denominator", lambda x: x / const(x, [3], 27, 0.5, 2.0), A(3))
case("RealDiv", "const numerator", lambda y: const(y, [3], 28) / y, A(3, domain="nonzero"), expect="tfshap")
case("Div", "both", lambda x, y: tf.raw_ops.Div(x=x, y=y), A(3), A(3, domain="nonzero"), expect="tfshap")
case("Div", "const denominator", lambda x: tf.raw_ops.Div(x=x, y=const(x, [3], 29, 0.5, 2.0)), A(3))
case("DivNoNan", "both, zeros",
     lambda x, y: tf.math.divide_no_nan(x, y), A(3), A(3, domain="some_zero"), expect="tfshap")
case("DivNoNan", "const denominator", lambda x: tf.math.divide_no_nan(x, const(x, [3], 30, 0.5, 2.0)), A(3))
case(
    "DivNoNan",
    "const numerator",
    lambda y: tf.math.divide_no_nan(const(y, [3], 31), y),
    A(3, domain="some_zero"),
    expect="tfshap",
)
case("Maximum", "both", tf.maximum, A(3), A(3), expect="tfshap", monotone=True)
case("Maximum", "bcast n3 n1", tf.maximum, A(3), A(1), expect="tfshap", monotone=True)
case("Maximum", "relu-like const",
     lambda x: tf.maximum(x, tf.constant(0.1, x.dtype)), A(3), expect="tfshap", monotone=True)
case("Minimum", "both", tf.minimum, A(3), A(3), expect="tfshap", monotone=True)
case("Minimum", "const 3", lambda x: tf.minimum(const(x, [3], 32), x), A(3), expect="tfshap", monotone=True)
case("SquaredDifference", "both", tf.math.squared_difference, A(3), A(3), expect="tfshap")
case(
    "SquaredDifference",
    "bcast n3 3",
    lambda x: tf.math.squared_difference(x, const(x, [3], 33)),
    A(3),
    expect="tfshap",
)
case("Pow", "both", tf.pow, A(3, domain="positive"), A(3), expect="tfshap")
case("Pow", "const exponent", lambda x: tf.pow(x, tf.constant(3.0, x.dtype)), A(3), expect="tfshap")
case("Pow", "const base", lambda y: tf.pow(tf.constant(1.7, y.dtype), y), A(3), expect="tfshap")
case("Pow", "small base, exponent -1/2",
     lambda x: tf.pow(x, tf.constant(-0.5, x.dtype)), A(3, domain="small"), expect="tfshap")
case("Atan2", "both", tf.atan2, A(3), A(3), expect="tfshap")
case("Atan2", "bcast n3 n1", tf.atan2, A(3), A(1, domain="positive"), expect="tfshap")

# --- max pooling and max/min reductions: Shapley per window of w <= 16 inputs, cross-max above ----
_F32 = ("float32",)  # MaxPool3D has no float64 kernel


def _max_case(op_type, name, build, *shape, **kwargs):
    """A maximum (minimum) over distinct values: no ties to break, nondecreasing (increasing for Min: −max(−x))."""
    case(op_type, name, build, A(*shape, domain="distinct"), expect="tfshap", monotone=True, **kwargs)


def _pool(size, stride, padding):
    return lambda x: tf.nn.max_pool2d(x, size, stride, padding)


def _pool3d(size, stride, padding):
    return lambda x: tf.nn.max_pool3d(x, size, stride, padding)


_max_case("Max", "axis 1", lambda x: tf.reduce_max(x, 1), 3, 4)
_max_case("Max", "axes 1 2", lambda x: tf.reduce_max(x, [1, 2]), 3, 4)
_max_case("Max", "axis -1 keepdims", lambda x: tf.reduce_max(x, -1, keepdims=True), 3, 4)
_max_case("Max", "no axes", lambda x: tf.reduce_max(x, []), 3)
_max_case("Max", "axes 1 2 w18 cross-max", lambda x: tf.reduce_max(x, [1, 2]), 3, 6)
case("Max", "axis 1, values near 1e-7", lambda x: tf.reduce_max(x, 1), A(3, 4, domain="distinct tiny"), expect="tfshap",
     dtypes=("float32",),  # its differences lie below 32 ulps of 1 in float32 (3.8e-6), not in float64
     monotone=True)
_max_case("Min", "axis 1", lambda x: tf.reduce_min(x, 1), 3, 4)
_max_case("Min", "axes 2 1 keepdims", lambda x: tf.reduce_min(x, [2, 1], keepdims=True), 3, 4)
_max_case("Min", "axis 1 w20 cross-max", lambda x: tf.reduce_min(x, 1), 20)
_max_case("MaxPool", "2x2 valid", _pool(2, 2, "VALID"), 4, 4, 2)
_max_case("MaxPool", "2x2 valid odd size", _pool(2, 2, "VALID"), 5, 3, 2)
_max_case("MaxPool", "3x3 stride 2 same", _pool(3, 2, "SAME"), 5, 5, 2)
_max_case("MaxPool", "3x3 stride 1 same", _pool(3, 1, "SAME"), 4, 4, 2)
_max_case("MaxPool", "2x1 overlapping", _pool([2, 1], 1, "VALID"), 3, 2, 1)
_max_case("MaxPool", "4x4 valid w16", _pool(4, 4, "VALID"), 4, 8, 1)
_max_case("MaxPool", "5x5 valid w25 cross-max", _pool(5, 1, "VALID"), 5, 6, 1)
_max_case("MaxPool", "5x5 stride 5 w25 tiling cross-max", _pool(5, 5, "VALID"), 10, 11, 1)
_max_case("MaxPool3D", "2 valid", _pool3d(2, 2, "VALID"), 4, 4, 2, 2, dtypes=_F32)
_max_case("MaxPool3D", "2 stride 1 same", _pool3d(2, 1, "SAME"), 3, 3, 2, 1, dtypes=_F32)
_max_case("MaxPool3D", "3 stride 2 same w27 cross-max", _pool3d(3, 2, "SAME"), 3, 3, 3, 2, dtypes=_F32)
# rules="crossmax": cross-max for every window
_X = "crossmax"
_max_case("Max", "axis 1", lambda x: tf.reduce_max(x, 1), 3, 4, rules=_X)
_max_case("Min", "axes 2 1 keepdims", lambda x: tf.reduce_min(x, [2, 1], keepdims=True), 3, 4, rules=_X)
_max_case("MaxPool", "3x3 stride 2 same", _pool(3, 2, "SAME"), 5, 5, 2, rules=_X)
_max_case("MaxPool", "2x2 valid odd size", _pool(2, 2, "VALID"), 5, 3, 2, rules=_X)
_max_case("MaxPool3D", "2 valid", _pool3d(2, 2, "VALID"), 4, 4, 2, 2, dtypes=_F32, rules=_X)
_max_case("TopKV2", "k 1", lambda x: tf.math.top_k(x, 1).values, 3, 4, rules=_X)

# --- softmax ----------------------------------------------------------------------
#: Logits masked as Keras's Softmax layer masks them: -1e9 in both rows at the same positions.
_MASK = np.array([True, False, True, True, False])


def _masked(fn):
    return lambda x: fn(tf.where(tf.constant(_MASK), x, tf.constant(-1e9, x.dtype)))


_S = "shapley"  # the 1-vs-rest split
_TEN = lambda x: tf.constant(10.0, x.dtype)  # noqa: E731
for _rules in ("default", _S):
    case("Softmax", "n5", tf.nn.softmax, A(5), expect="tfshap", rules=_rules)
    case("Softmax", "n2x4", tf.nn.softmax, A(2, 4), expect="tfshap", rules=_rules)
    case("Softmax", "n1", tf.nn.softmax, A(1), expect="tfshap", rules=_rules)
    case("Softmax", "masked -1e9", _masked(tf.nn.softmax), A(5), expect="tfshap", rules=_rules)
    case("LogSoftmax", "n5", tf.nn.log_softmax, A(5), expect="tfshap", rules=_rules)
    case("LogSoftmax", "n2x4", tf.nn.log_softmax, A(2, 4), expect="tfshap", rules=_rules)
    case("LogSoftmax", "masked -1e9", _masked(tf.nn.log_softmax), A(5), expect="tfshap", rules=_rules)
    # logits 10× the normal draw: one logit dominates each row, and the rest are tiny beside it
    case("Softmax", "wide logits", lambda x: tf.nn.softmax(x * _TEN(x)), A(6), expect="tfshap", rules=_rules)
    case("LogSoftmax", "wide logits", lambda x: tf.nn.log_softmax(x * _TEN(x)), A(6), expect="tfshap", rules=_rules)
case("Softmax", "n2", tf.nn.softmax, A(2), expect="tfshap", rules=_S)


# --- control flow: loops and the TensorLists that carry their state ------------------
_LOOP_DECAY = tf.Variable(0.9, dtype=tf.float64)  # read in the body: a stateful loop is a While


def _loop(x, stateful=False):
    """Three steps of h ← tanh(h) · 0.9 + x · 0.1: a loop whose body holds a rule."""
    def body(i, h):
        decay = tf.cast(_LOOP_DECAY.read_value(), x.dtype) if stateful else tf.constant(0.9, x.dtype)
        return i + 1, tf.tanh(h) * decay + x * tf.constant(0.1, x.dtype)

    return tf.while_loop(lambda i, h: i < 3, body, [tf.constant(0), x])[1]


def _time_major(x):
    return tf.transpose(x, [1, 0, 2])


def _list_of_steps(x):
    return tf.TensorArray(x.dtype, size=x.shape[1], element_shape=[None, x.shape[2]]).unstack(_time_major(x))


def _list_round_trip(x):
    return _time_major(_list_of_steps(x).stack())


def _list_write(x, y):
    steps = tf.TensorArray(x.dtype, size=2, element_shape=[None, x.shape[1]]).write(0, x).write(1, y)
    return _time_major(steps.stack())


case("While", "tanh loop", lambda x: _loop(x, stateful=True), A(3), expect="keep")
case("StatelessWhile", "tanh loop", _loop, A(3), expect="keep")
case("TensorListFromTensor", "unstack stack", _list_round_trip, A(4, 3))
case("TensorListStack", "unstack stack", _list_round_trip, A(4, 3))
case("TensorListGetItem", "read step 1", lambda x: _list_of_steps(x).read(1), A(4, 3))
case("TensorListSetItem", "write two steps", _list_write, A(3), A(3))


# --- control flow: branches and nested tf.functions ------------------------------------
def _branches(x, stateful=False):
    """tanh(x)·x or x², chosen by a predicate that does not vary (the batch size)."""
    def tanh_branch():
        decay = tf.cast(_LOOP_DECAY.read_value(), x.dtype) if stateful else tf.constant(0.9, x.dtype)
        return tf.tanh(x) * x * decay

    return tf.cond(tf.shape(x)[0] > 0, tanh_branch, lambda: tf.square(x))


def _switch(x, stateful=False):
    scale = (lambda: tf.cast(_LOOP_DECAY.read_value(), x.dtype)) if stateful else (lambda: tf.constant(0.9, x.dtype))
    return tf.switch_case(tf.shape(x)[0] // (2 * N), [lambda: tf.square(x), lambda: tf.sigmoid(x) * x * scale()])


@tf.function(autograph=False)
def _nested(x, y):
    return tf.tanh(x) * y + tf.nn.relu(y)


@tf.function(autograph=False)
def _nested_stateful(x):
    return tf.sigmoid(x) * x * tf.cast(_LOOP_DECAY, x.dtype)


case("If", "tanh or square", lambda x: _branches(x, stateful=True), A(3), expect="keep")
case("StatelessIf", "tanh or square", _branches, A(3), expect="keep")
case("Case", "square or swish", lambda x: _switch(x, stateful=True), A(3), expect="keep")
case("StatelessCase", "square or swish", _switch, A(3), expect="keep")
case("PartitionedCall", "tanh(x)·y + relu(y)", _nested, A(3), A(3), expect="tfshap")
case("PartitionedCall", "one tensor passed twice", lambda x: _nested(x, x), A(3), expect="tfshap")
case("StatefulPartitionedCall", "swish with a variable", _nested_stateful, A(3), expect="tfshap")


# ---------------------------------------------------------------------------------------
# refusals: ops whose use here has no exact treatment must fail to compile, naming the op


@dataclass(frozen=True)
class Refused:
    name: str
    build: Callable
    args: tuple[Arg, ...]
    #: Every one of these op types must be named in the error message.
    op_types: tuple[str, ...]
    #: A fragment of the reason that must appear too.
    reason: str = ""


REFUSALS: list[Refused] = []


def refused(name, build, args, op_types, reason=""):
    REFUSALS.append(Refused(name, build, tuple(args), tuple(op_types), reason))


refused("Conv2D varying filter",
        lambda x, f: tf.nn.conv2d(x, f[0], 1, "SAME"), [A(3, 3, 2), A(2, 2, 2, 2)], ["Conv2D"], "filter")
refused(
    "FusedBatchNormV3 is_training",
    lambda x: tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=tf.ones([3], x.dtype),
        offset=tf.zeros([3], x.dtype),
        mean=tf.zeros([0], x.dtype),
        variance=tf.zeros([0], x.dtype),
        is_training=True,
    )[0],
    [A(2, 2, 3)],
    ["FusedBatchNormV3"],
    "is_training",
)
refused("Max over the batch axis", lambda x: tf.reduce_max(x, 0), [A(3)], ["Max"], "batch axis")
refused("Min over every axis", lambda x: tf.reduce_min(x), [A(3)], ["Min"], "batch axis")
refused("Sum over the batch axis", lambda x: tf.reduce_sum(x, 0), [A(3)], ["Sum"], "batch axis")
refused("Mean over every axis", lambda x: tf.reduce_mean(x), [A(3)], ["Mean"], "batch axis")
refused("Cumsum over the batch axis", lambda x: tf.cumsum(x, 0), [A(3)], ["Cumsum"], "batch axis")
refused("Roll along the batch axis", lambda x: tf.roll(x, 1, axis=0), [A(3)], ["Roll"], "batch axis")
refused("Roll along every axis", lambda x: tf.roll(x, [1, 1], axis=[-1, -2]), [A(3)], ["Roll"], "batch axis")
refused("FFT2D over the batch axis", _fourier(tf.signal.fft2d), [A(3)], ["FFT2D"], "batch axis")
refused("FFT over the batch axis", _fourier(tf.signal.fft), [A()], ["FFT"], "batch axis")
refused("RFFT of a varying length",
        lambda x: tf.signal.rfft(x, [tf.cast(x[0, 0] > 0.0, tf.int32) + 3]), [A(4)], ["RFFT"], "fft_length")
refused(
    "SpaceToBatchND around a relu",
    lambda x: tf.batch_to_space(tf.nn.relu(tf.space_to_batch(x, [2, 2], [[0, 0], [0, 0]])), [2, 2], [[0, 0], [0, 0]]),
    [A(4, 4, 1)],
    ["SpaceToBatchND", "BatchToSpaceND"],
    "batch axis",
)
refused(
    "TensorScatterUpdate at varying indices",
    lambda x: tf.tensor_scatter_nd_update(x, tf.cast(x[:, :1] > 0.0, tf.int32), x),
    [A(3)],
    ["TensorScatterUpdate"],
    "indices",
)
refused("Roll by a varying shift",
        lambda x: tf.roll(x, tf.cast(x[0, 0] > 0.0, tf.int32), axis=1), [A(3)], ["Roll"], "shift")
refused(
    "MaxPool explicit padding",
    lambda x: tf.raw_ops.MaxPool(
        input=x, ksize=[1, 2, 2, 1], strides=[1, 1, 1, 1], padding="EXPLICIT",
        explicit_paddings=[0, 0, 1, 1, 1, 1, 0, 0]
    ),
    [A(3, 3, 1)],
    ["MaxPool"],
    "explicit padding",
)
refused("MatMul both varying", lambda x, y: tf.matmul(x, y, transpose_b=True), [A(3), A(3)], ["MatMul"], "bilinear")
refused("BatchMatMulV2 batch axes apart", tf.matmul, [A(2, 3), A(1, 3, 2)], ["BatchMatMulV2"], "different axes")
refused("Einsum outer product over the batch",
        lambda x, y: tf.einsum("ni,mj->nmij", x, y), [A(3), A(2)], ["Einsum"], "different axes")
refused("Einsum summing the batch axis",
        lambda x, y: tf.einsum("ni,ni->i", x, y), [A(3), A(3)], ["Einsum"], "sums over the batch axis")
refused("MatMul x^T W",
        lambda x: tf.matmul(x, const(x, [2 * N, 3], 36), transpose_a=True), [A(4)], ["MatMul"],
        "sums over the batch axis")


def _fused_norm_training(x, target, data_format="NCHW"):
    channels = tf.reshape(x, target) if target is not None else x
    n = tf.shape(channels)[1 if data_format == "NCHW" else 3 : 2 if data_format == "NCHW" else 4]
    return tf.raw_ops.FusedBatchNormV3(
        x=channels, scale=tf.ones(n, x.dtype), offset=tf.zeros(n, x.dtype), mean=tf.zeros([0], x.dtype),
        variance=tf.zeros([0], x.dtype), is_training=True, data_format=data_format,
    )[0]


refused("FusedBatchNormV3 NCHW of the batch",
        lambda x: _fused_norm_training(x, None), [A(3, 2, 2)], ["FusedBatchNormV3"], "not a reshape")
refused("FusedBatchNormV3 N above 1",
        lambda x: _fused_norm_training(x, [2, -1, 6, 1]), [A(4, 6)], ["FusedBatchNormV3"], "straddle")
refused("FusedBatchNormV3 channels across samples",
        lambda x: _fused_norm_training(x, [1, -1, 8, 1]), [A(4, 5)], ["FusedBatchNormV3"], "straddle")
refused("If on a varying predicate",
        lambda x: tf.cond(x[0, 0] > 0.0, lambda: x, lambda: -x), [A(3)], ["StatelessIf"], "which branch")
refused("Any over the batch axis", lambda x: tf.where(tf.reduce_any(x > 0, 0), x, 0.0), [P(3)], ["Any"], "batch axis")
refused(
    "two unknown op types at once",
    lambda x: tf.math.cumprod(x, 1) + tf.math.erfinv(tf.tanh(x)),
    [A(3)],
    ["Cumprod", "Erfinv"],
    "no rule is registered",
)


# --- helper F: layer-zoo rules (SquaredDifference closed form, TopKV2) ----------------
case("SquaredDifference", "const minus x",
     lambda x: tf.math.squared_difference(const(x, [3], 37), x), A(3), expect="tfshap")
case("SquaredDifference", "bcast both n3 n1", tf.math.squared_difference, A(3), A(1), expect="tfshap")
case("TopKV2", "k 1", lambda x: tf.math.top_k(x, 1).values, A(3, 4, domain="distinct"), expect="tfshap", monotone=True)
case("TopKV2", "k 1 rank 3",
     lambda x: tf.math.top_k(x, 1).values, A(2, 5, domain="distinct"), expect="tfshap", monotone=True)
_max_case("TopKV2", "k 1 w17 cross-max", lambda x: tf.math.top_k(x, 1).values, 17)
refused("TopKV2 k 2", lambda x: tf.math.top_k(x, 2).values, [A(4)], ["TopKV2"], "order statistics")
refused("sort", lambda x: tf.sort(x, axis=-1), [A(4)], ["TopKV2"], "order statistics")
refused("TopKV2 over the batch axis", lambda x: tf.math.top_k(x, 1).values, [A()], ["TopKV2"], "batch axis")
refused("GatherV2 indices computed from the inputs",
        lambda x: tf.gather(x, tf.cast(tf.abs(x[:, 0]) * 0, tf.int32), axis=1, batch_dims=1), [A(3)], ["GatherV2"],
        "indices are computed from the explained inputs")
