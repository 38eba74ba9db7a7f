"""lstmfast's native engine (cpp/bindings.cpp; the contract is cpp/lstm.h).

Private: ``lstmfast.ops`` checks the arguments (with the messages users see), allocates every array
and calls ``forward``/``backward``; the GPU engine ``lstmfast.cuda.ops`` takes the same arguments.
Every array is a C-contiguous NumPy array; the binding checks dtype, shape, contiguity and
writability again, so a wrong direct call raises ValueError/TypeError instead of crashing.
T = time steps, B = batch, X = input size, H = units.
"""
from typing import Optional, Sequence, SupportsFloat, SupportsIndex, Union

import numpy as np

# What pybind11 converts: an int argument takes any integer (int, bool, NumPy integers: __index__), not a
# float; a double argument anything with __float__ or __index__.
_Int = SupportsIndex
_Float = Union[SupportsFloat, SupportsIndex]

__version__: str

def forward(
    x: np.ndarray,                                  # [T,B,X] float32 or float64: the engine precision
    kernel: np.ndarray,                             # [X,4H] gate columns i, f, c, o
    recurrent_kernel: np.ndarray,                   # [H,4H]
    bias: Optional[np.ndarray],                     # [4H] or None (zeros)
    h0: Optional[np.ndarray],                       # [B,H] or None (zeros)
    c0: Optional[np.ndarray],                       # [B,H] or None (zeros)
    peephole: Optional[np.ndarray],                 # [3,H] or None (rows p_i, p_f, p_o)
    lengths: Optional[np.ndarray],                  # [B] int32 in [0,T], or None (all T)
    recurrent_dropout_mask: Optional[np.ndarray],   # [B,H] or None; scales h_{t-1}
    recurrent_activation: _Int,                     # 0 sigmoid, 1 hard_sigmoid
    y: np.ndarray,                                  # out [T,B,H]
    h: np.ndarray,                                  # out [B,H] final hidden state
    c: np.ndarray,                                  # out [B,H] final cell state
    gates: Optional[np.ndarray],                    # out [T,B,4H] activated gates (training), or None
    cells: Optional[np.ndarray],                    # out [T,B,H] c_t (training), or None with gates
    precision: _Int = 0,                            # 0 native, 1 bfloat16 (float32; computed in float32 here)
) -> None:
    """The forward pass into caller-allocated arrays (inputs read, outputs written)."""

def backward(
    x: np.ndarray,                                  # [T,B,X] the forward call's inputs, unchanged
    kernel: np.ndarray,                             # [X,4H]
    recurrent_kernel: np.ndarray,                   # [H,4H]
    h0: Optional[np.ndarray],                       # [B,H] or None
    c0: Optional[np.ndarray],                       # [B,H] or None
    peephole: Optional[np.ndarray],                 # [3,H] or None
    lengths: Optional[np.ndarray],                  # [B] int32 or None
    recurrent_dropout_mask: Optional[np.ndarray],   # [B,H] or None
    recurrent_activation: _Int,                     # 0 sigmoid, 1 hard_sigmoid
    y: np.ndarray,                                  # [T,B,H] the forward call's output
    gates: np.ndarray,                              # in/out [T,B,4H]: activated gates in, gate gradients out
    cells: np.ndarray,                              # [T,B,H] the forward call's cache
    dy: Optional[np.ndarray],                       # [T,B,H] or None (zeros); ignored at padded steps
    dh: Optional[np.ndarray],                       # [B,H] gradient of the final h, or None
    dc: Optional[np.ndarray],                       # [B,H] gradient of the final c, or None
    dx: np.ndarray,                                 # out [T,B,X]
    dkernel: np.ndarray,                            # out [X,4H]
    drecurrent_kernel: np.ndarray,                  # out [H,4H]
    dbias: Optional[np.ndarray],                    # out [4H], or None (not computed)
    dh0: np.ndarray,                                # out [B,H]
    dc0: np.ndarray,                                # out [B,H]
    dpeephole: Optional[np.ndarray],                # out [3,H], given exactly when peephole is
    precision: _Int = 0,                            # the forward call's
) -> None:
    """Gradients of a forward call into caller-allocated arrays; consumes ``gates``."""

def optim_step_f32(
    rule: _Int,                                     # optim.h's OptimRule
    vars: Sequence[np.ndarray],                     # in/out float32, one per variable
    grads: Sequence[np.ndarray],                    # same shapes as vars
    slots: Sequence[Sequence[np.ndarray]],          # in/out: each variable's slot arrays
    lr: _Float,
    momentum: _Float,
    one_minus_beta_1: _Float,
    one_minus_beta_2: _Float,
    rho: _Float,
    one_minus_rho: _Float,
    epsilon: _Float,
    scales: Optional[Sequence[float]],              # a gradient factor per variable (int or float), or None
    clipvalue: Optional[float],                     # an int or float, or None (no clipping)
    decay_keep: _Float,
) -> None:
    """One fused optimizer step over float32 variables; everything is checked before anything changes."""

def optim_step_f64(
    rule: _Int,
    vars: Sequence[np.ndarray],                     # in/out float64
    grads: Sequence[np.ndarray],
    slots: Sequence[Sequence[np.ndarray]],
    lr: _Float,
    momentum: _Float,
    one_minus_beta_1: _Float,
    one_minus_beta_2: _Float,
    rho: _Float,
    one_minus_rho: _Float,
    epsilon: _Float,
    scales: Optional[Sequence[float]],
    clipvalue: Optional[float],
    decay_keep: _Float,
) -> None:
    """``optim_step_f32`` for float64 variables."""

def scatter_add_rows_f32(out: np.ndarray, index: np.ndarray, src: np.ndarray) -> None:
    """``out[index[i]] += src[i]``: out [N,D] float32 in/out, index [n] int32/int64 in [0,N), src [n,D]."""

def scatter_add_rows_f64(out: np.ndarray, index: np.ndarray, src: np.ndarray) -> None:
    """``scatter_add_rows_f32`` for float64."""

def gemm_f32(trans_a: bool, trans_b: bool, A: np.ndarray, B: np.ndarray, C: np.ndarray,
             accumulate: bool = False) -> None:
    """``C [M,N] = op(A) op(B)`` (+ C when accumulate), float32, row-major; C is written."""

def gemm_f64(trans_a: bool, trans_b: bool, A: np.ndarray, B: np.ndarray, C: np.ndarray,
             accumulate: bool = False) -> None:
    """``gemm_f32`` for float64."""

def simd_level() -> str:
    """The SIMD level in use: 'portable', 'avx2', 'avx512' or 'avx512emu'."""

def simd_level_supported() -> str:
    """The best SIMD level this CPU supports."""

def set_simd_level(level: str) -> None:
    """Force a SIMD level; ValueError when unknown or unsupported here."""

def num_threads() -> int:
    """Threads the engine uses."""

def set_num_threads(n: _Int) -> None:
    """Threads for the engine, 0..1024 (0 = OpenMP's default)."""

def openmp_enabled() -> bool:
    """Whether the engine was built with OpenMP."""
