"""The GPU engine (lstmfast.cuda): kernels, engine entry points, backend selection.

The engine tests themselves (against the oracle, edge cases) are written once in test_ops.py and
run on every engine through conftest's ``engine`` fixture; the stand-in for CuPy they use for
"emulated" lives here. Three layers, so that most of it is checked on machines without a GPU:

* The kernel source compiles: nvcc (when on PATH) for several GPU architectures, NVRTC through
  CuPy's bindings (when CuPy and NVRTC load; no GPU needed), and g++ as host code.
* "emulated": the whole GPU path (argument checks, buffers, the order of GEMMs and kernel launches,
  the weight gradients after the loop) runs on a stand-in for CuPy backed by NumPy, with the step
  kernels replaced by the SAME per-element functions (lstm_pointwise.cuh) compiled by g++ and
  called through ctypes. The stand-in checks every launch the way CuPy does not: argument count,
  scalar types, dtypes, contiguity, sizes (from the shape comments in the header), the device,
  and that the grid covers B*H threads.
* "gpu": the same tests on a real GPU through CuPy; skipped when CuPy or a GPU is missing.

Backend selection and the errors for a missing CuPy or GPU are tested without either.
"""
import contextlib
import ctypes
import math
import os
import re
import shutil
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import lstmfast
import lstmfast.cuda as lcuda
from lstmfast import ops
from lstmfast.cuda import _kernels
from lstmfast.cuda import activations as lcuda_activations
from lstmfast.cuda import dropout as cuda_dropout
from lstmfast.cuda import ops as cuda_ops
from lstmfast.cuda import optim as cuda_optim

from conftest import Side
from test_ops import GRAD_FIELDS, OUTPUT_FIELDS, TOLERANCES, host, small_case

NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")
NVCC_ARCHS = ("sm_75", "sm_80", "sm_90")  # oldest CUDA 13 supports, A100, H100
COMPILE_TIMEOUT_S = 300


# ---------------------------------------------------------------------------------------------
# The kernel source, parsed: kernel parameter lists, and the shape comment of every pointer.
# ---------------------------------------------------------------------------------------------

ELEMENT_OF = {"lstm_forward_step": "lstm_forward_element", "lstm_backward_step": "lstm_backward_element"}


def _strip_comments(text):
    return re.sub(r"//[^\n]*", "", text)


def _param(text):
    """'const T* z_in' -> ('const T*', 'z_in')."""
    m = re.fullmatch(r"(.*?)\s*(\w+)", " ".join(text.split()))
    return m.group(1).replace(" *", "*"), m.group(2)


def kernel_params(kernel, file=_kernels.KERNEL_FILE):
    """[(type, name)] of the __global__ kernel in ``file`` (lstm_kernels.cu unless given)."""
    src = _strip_comments(_kernels.read(file))
    m = re.search(rf"__global__\s+void\s+{kernel}\s*\(([^)]*)\)", src)
    assert m, f"{kernel} not found in {file}"
    return [_param(p) for p in m.group(1).split(",")]


def element_params(element):
    """[(type, name)] of the per-element function in lstm_pointwise.cuh."""
    src = _strip_comments(_kernels.read(_kernels.HEADER_FILE))
    m = re.search(rf"LF_HD\s+void\s+{element}\s*\(([^)]*)\)", src)
    assert m, f"{element} not found in {_kernels.HEADER_FILE}"
    return [_param(p) for p in m.group(1).split(",")]


def wrapper_call_args(kernel):
    """Argument names the kernel passes to its element function."""
    src = _strip_comments(_kernels.read(_kernels.KERNEL_FILE))
    m = re.search(rf"lstmfast::{ELEMENT_OF[kernel]}<T>\(([^)]*)\)", src)
    assert m, f"{kernel} does not call lstmfast::{ELEMENT_OF[kernel]}<T>"
    return [a.strip() for a in m.group(1).split(",")]


def shape_comments():
    """{pointer name: dims} from the '// [T,B,4H]' comments of the element functions' parameters."""
    shapes = {}
    for line in _kernels.read(_kernels.HEADER_FILE).splitlines():
        m = re.search(r"\*\s*(\w+)\)?\s*[,{]?\s*\{?\s*//\s*\[([^\]]*)\]", line)
        if m:
            shapes[m.group(1)] = m.group(2).replace(" ", "").split(",")
    return shapes


def _elements(dims, sizes):
    count = 1
    for dim in dims:
        m = re.fullmatch(r"(\d*)([TBH]?)", dim)
        assert m and dim, f"unreadable dimension {dim!r}"
        count *= (int(m.group(1)) if m.group(1) else 1) * (sizes[m.group(2)] if m.group(2) else 1)
    return count


def test_kernel_wrappers_pass_their_parameters_in_order():
    shapes = shape_comments()
    for kernel, element in ELEMENT_OF.items():
        params = kernel_params(kernel)
        assert element_params(element) == [("long long", "n")] + params, kernel
        assert wrapper_call_args(kernel) == ["n"] + [name for _, name in params], kernel
        for ctype, name in params:
            assert ctype in ("long long", "int", "T*", "const T*", "const int*"), (kernel, ctype, name)
            if ctype.endswith("*"):
                assert name in shapes, f"{kernel}: pointer {name} has no shape comment"
        assert [name for _, name in params[:4]] == ["t", "T_", "B", "H"], kernel


def assert_self_contained(source, header):
    """The source CuPy compiles holds the header and lf_math.cuh (once), and no other #include (a
    file CuPy's cache key, the hash of the source text, would miss)."""
    assert "#include" not in source.replace("#include <math.h>", ""), "a header CuPy's cache key would miss"
    math = _kernels.read("lf_math.cuh")
    assert _kernels.read(header).replace('#include "lf_math.cuh"\n', math) in source
    assert source.count(math) == 1


def test_name_expressions_cover_every_kernel_and_dtype():
    assert _kernels.name_expressions() == ["lstm_forward_step<float>", "lstm_forward_step<double>",
                                           "lstm_backward_step<float>", "lstm_backward_step<double>",
                                           "lstm_forward_sequence<float>", "lstm_forward_sequence<double>",
                                           "lstm_backward_sequence<float>", "lstm_backward_sequence<double>"]
    source = _kernels.source()
    assert_self_contained(source, _kernels.HEADER_FILE)


# ---------------------------------------------------------------------------------------------
# (a) The kernels compile: nvcc, NVRTC, g++.
# ---------------------------------------------------------------------------------------------

def test_every_cu_file_is_compiled_by_these_tests():
    cu_files = sorted(f for f in os.listdir(_kernels.KERNEL_DIR) if f.endswith(".cu"))
    assert cu_files == sorted([_kernels.ACTIVATION_KERNEL_FILE, _kernels.KERNEL_FILE, _kernels.OPTIM_KERNEL_FILE]), \
        "a new .cu file needs its own compile test here"


def _nvcc_cubin(tmp_path, arch, kernel_file, names, options):
    """The cubin nvcc makes for ``arch`` from a .cu file that includes ``kernel_file`` and
    instantiates each name expression CuPy will ask for (``names``); warnings are errors."""
    refs = ",\n  ".join(f"(const void*)&{name}" for name in names)
    stem = kernel_file.split(".")[0]
    driver = tmp_path / f"{stem}_driver.cu"
    driver.write_text(f'#include "{kernel_file}"\n'
                      f"const void* const* lstmfast_instantiations() {{\n"
                      f"  static const void* const kernels[] = {{\n  {refs}}};\n  return kernels;\n}}\n")
    cubin = tmp_path / f"{stem}_{arch}.cubin"
    cmd = [NVCC, *options, "-cubin", f"-arch={arch}", "-Werror", "all-warnings", "-I", _kernels.KERNEL_DIR,
           "-o", str(cubin), str(driver)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return cubin.read_bytes()


def _has_both_instantiations(data, kernels):
    """Each kernel template instantiated for float and double in the cubin ``data``."""
    for kernel in kernels:
        for ctype in ("If", "Id"):  # mangled template argument float, double
            assert f"{len(kernel)}{kernel}{ctype}".encode() in data, (kernel, ctype)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", NVCC_ARCHS)
def test_kernels_compile_with_nvcc(arch, tmp_path):
    data = _nvcc_cubin(tmp_path, arch, _kernels.KERNEL_FILE, _kernels.name_expressions(), _kernels.OPTIONS)
    _has_both_instantiations(data, _kernels.KERNEL_NAMES + _kernels.SEQUENCE_NAMES)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", NVCC_ARCHS)
def test_optimizer_kernels_compile_with_nvcc(arch, tmp_path):
    names = _kernels.optim_name_expressions()
    assert names == ["optim_update<float>", "optim_update<double>", "optim_clip_scales"]
    data = _nvcc_cubin(tmp_path, arch, _kernels.OPTIM_KERNEL_FILE, names, _kernels.OPTIM_OPTIONS)
    _has_both_instantiations(data, [_kernels.OPTIM_UPDATE])
    assert b"17optim_clip_scales" in data
    assert_self_contained(_kernels.optim_source(), _kernels.OPTIM_HEADER_FILE)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", NVCC_ARCHS)
def test_activation_kernels_compile_with_nvcc(arch, tmp_path):
    names = _kernels.activation_name_expressions()
    assert len(names) == 2 * len(_kernels.ACTIVATION_NAMES) == 14
    data = _nvcc_cubin(tmp_path, arch, _kernels.ACTIVATION_KERNEL_FILE, names, _kernels.OPTIONS)
    _has_both_instantiations(data, _kernels.ACTIVATION_NAMES)
    source = _kernels.activation_source()
    assert_self_contained(source, _kernels.ACTIVATION_HEADER_FILE)
    assert source.count("LF_HD Philox4 philox4x32_10(") == 1  # lf_random.cuh pasted too


def _nvrtc():
    """CuPy's NVRTC bindings when they load (no GPU needed), else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from cupy_backends.cuda.libs import nvrtc
            nvrtc.getVersion()
    except Exception:
        return None
    return nvrtc


NVRTC_MODULES = {"lstm": (_kernels.source, _kernels.name_expressions, _kernels.OPTIONS, _kernels.KERNEL_FILE, 8),
                 "optim": (_kernels.optim_source, _kernels.optim_name_expressions, _kernels.OPTIM_OPTIONS,
                           _kernels.OPTIM_KERNEL_FILE, 3),
                 "activation": (_kernels.activation_source, _kernels.activation_name_expressions, _kernels.OPTIONS,
                                _kernels.ACTIVATION_KERNEL_FILE, 8)}


@pytest.mark.parametrize("module", list(NVRTC_MODULES))
def test_kernels_compile_with_nvrtc_as_cupy_does(module):
    nvrtc = _nvrtc()
    if nvrtc is None:
        pytest.skip("CuPy's NVRTC bindings do not load (CuPy or the NVRTC library is missing)")
    source, name_expressions, module_options, file_name, count = NVRTC_MODULES[module]
    # The options CuPy's RawModule adds: -arch for the device, default device functions, -ftz=true.
    options = module_options + ("-arch=compute_80", "--device-as-default-execution-space", "-ftz=true")
    program = nvrtc.createProgram(source(), file_name, (), ())
    try:
        for name in name_expressions():
            nvrtc.addNameExpression(program, name)
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError:
            pytest.fail(f"NVRTC failed:\n{nvrtc.getProgramLog(program)}")
        log = nvrtc.getProgramLog(program).strip("\x00 \n")
        assert log == "", f"NVRTC warnings:\n{log}"
        lowered = {name: nvrtc.getLoweredName(program, name) for name in name_expressions()}
        assert len(set(lowered.values())) == len(lowered) == count, lowered
        ptx = nvrtc.getPTX(program)
        ptx = ptx if isinstance(ptx, str) else ptx.decode("ascii", "replace")
        for mangled in lowered.values():
            assert f".entry {mangled}" in ptx, mangled
    finally:
        nvrtc.destroyProgram(program)


# The host build of the per-element functions: one extern "C" function per kernel and dtype that
# runs the element function for n = 0 .. B*H-1, i.e. the kernel with every thread in turn. The
# parameter lists are generated from lstm_kernels.cu, so they match what the GPU path passes.
def _host_source():
    lines = [f'#include "{_kernels.HEADER_FILE}"', f'#include "{_kernels.OPTIM_HEADER_FILE}"',
             f'#include "{_kernels.ACTIVATION_HEADER_FILE}"', f'#include "{_kernels.RANDOM_HEADER_FILE}"',
             f'#include "{_kernels.LOSS_HEADER_FILE}"', 'extern "C" {']
    for kernel, element in ELEMENT_OF.items():
        params = kernel_params(kernel)
        for ctype in ("float", "double"):
            decl = ", ".join(f"{t.replace('T', ctype) if t.endswith('*') else t} {n}" for t, n in params)
            names = ", ".join(n for _, n in params)
            lines += [f"void {kernel}_{ctype}({decl}) {{",
                      f"  for (long long n = 0; n < B * H; ++n) lstmfast::{element}<{ctype}>(n, {names});", "}"]
    lines += _host_optim_source()
    lines += _host_activation_source()
    lines.append("}")
    return "\n".join(lines) + "\n"


# The optimizer kernels as host loops over the same pointer tables and element functions
# (optim_rules.cuh): every variable, every element in turn, then (clip scales) the last block's work.
_HOST_OPTIM_UPDATE = """
  const lstmfast::OptimScalars<{T}> k(hyper);
  for (long long v = 0; v < n_vars; ++v) {{
    const long long* row = table + v * 7;
    {T}* var = ({T}*)row[0];
    const {T}* grad = (const {T}*)row[1];
    const {T} grad_scale = scales ? {T}(scales[v]) : {T}(1);
    for (long long i = 0; i < row[6]; ++i)
      lstmfast::optim_element<{T}>(rule, i, var, grad, ({T}*)row[2], ({T}*)row[3], ({T}*)row[4], scales != nullptr,
                                   grad_scale, k);
  }}
  (void)total; (void)chunk;
"""
_HOST_CLIP_SCALES = """
  double all = 0;
  for (long long v = 0; v < n_vars; ++v) {
    const long long* row = table + v * 4;
    for (long long i = 0; i < row[3]; ++i) {
      const double x = row[1] ? ((const double*)row[0])[i] : (double)((const float*)row[0])[i];
      sq[v] += x * x;
    }
  }
  for (long long v = 0; v < n_vars; ++v) all += sq[v];
  for (long long v = 0; v < n_vars; ++v) {
    scales[v] = lstmfast::clip_scale(mode, clip, sq[v], all);
    sq[v] = 0;
  }
  *done = 0;
  (void)total; (void)chunk;
"""


def _host_optim_source():
    def decl(params, ctype="T"):
        return ", ".join(f"{t.replace('T*', ctype + '*')} {n}" for t, n in params)

    lines = []
    params = kernel_params(_kernels.OPTIM_UPDATE, _kernels.OPTIM_KERNEL_FILE)
    for ctype in ("float", "double"):
        lines += [f"void {_kernels.OPTIM_UPDATE}_{ctype}({decl(params, ctype)}) {{",
                  _HOST_OPTIM_UPDATE.format(T=ctype), "}"]
    params = kernel_params(_kernels.OPTIM_CLIP_SCALES, _kernels.OPTIM_KERNEL_FILE)
    lines += [f"void {_kernels.OPTIM_CLIP_SCALES}({decl(params)}) {{", _HOST_CLIP_SCALES, "}"]
    return lines


def build_host_library(root):
    """The step kernels' element functions compiled by g++ into a shared library in ``root``
    (conftest's session fixture ``host_library``)."""
    if GXX is None:
        pytest.skip("g++ is not on PATH")
    src = root / "lstm_host.cpp"
    src.write_text(_host_source())
    lib = root / "liblstm_host.so"
    cmd = [GXX, "-std=c++17", "-O2", "-ffp-contract=off", "-shared", "-fPIC", "-Wall", "-Wextra", "-Wpedantic",
           "-Werror",
           "-I", _kernels.KERNEL_DIR, "-o", str(lib), str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return ctypes.CDLL(str(lib))


# The activation kernels as host loops over the same element functions (activation_rules.cuh):
# every element, or every row in turn with its reductions summed in order.
_HOST_ACTIVATION = {
    "activation_forward": "for (long long i = 0; i < n; ++i) y[i] = lstmfast::activation_value<{T}>(code, x[i]);",
    "activation_backward": "for (long long i = 0; i < n; ++i) dx[i] = lstmfast::activation_grad<{T}>(code, x[i], "
                           "y[i], dy[i]);",
    "softmax_forward": """
  for (long long r = 0; r < rows; ++r) {{
    const {T}* xr = x + r * cols;
    {T}* yr = y + r * cols;
    {T} m = xr[0], s = 0;
    for (long long c = 0; c < cols; ++c) m = (xr[c] > m || xr[c] != xr[c]) ? xr[c] : m;
    for (long long c = 0; c < cols; ++c) s += (yr[c] = lstmfast::softmax_exp(xr[c], m));
    for (long long c = 0; c < cols; ++c) yr[c] = yr[c] / s;
  }}""",
    "softmax_backward": """
  for (long long r = 0; r < rows; ++r) {{
    {T} dot = 0;
    for (long long c = 0; c < cols; ++c) dot += dy[r * cols + c] * y[r * cols + c];
    for (long long c = 0; c < cols; ++c) dx[r * cols + c] = lstmfast::softmax_grad(y[r * cols + c], dy[r * cols + c],
                                                                                  dot);
  }}""",
}


_HOST_ACTIVATION["binary_crossentropy"] = """
  const {T} C = ({T})cols;
  for (long long r = 0; r < rows; ++r) {{
    {T} sum = 0;
    for (long long i = r * cols; i < (r + 1) * cols; ++i)
      sum += from_logits ? lstmfast::bce_logit_term(p[i], t[i], C, grad + i)
                         : lstmfast::bce_probability_term(p[i], t[i], ({T})eps, ({T})one_minus_eps, C, grad + i);
    values[r] = from_logits ? sum / C : -sum / C;
  }}"""
_HOST_ACTIVATION["sparse_crossentropy"] = """
  for (long long r = 0; r < rows; ++r) {{
    const {T}* pr = p + r * cols;
    {T}* gr = grad + r * cols;
    const long long label = labels[r];
    if (from_logits) {{
      {T} m = pr[0], se = 0;
      for (long long c = 0; c < cols; ++c) m = lstmfast::nan_max(pr[c], m);
      for (long long c = 0; c < cols; ++c) se += (gr[c] = lstmfast::lf_exp(pr[c] - m));
      for (long long c = 0; c < cols; ++c) gr[c] = c == label ? gr[c] / se - {T}(1) : gr[c] / se;
      values[r] = (lstmfast::lf_log(se) + m) - pr[label];
      continue;
    }}
    {T} s = 0;
    for (long long c = 0; c < cols; ++c) s += pr[c];
    const {T} q = pr[label] / s;
    const {T} qc = lstmfast::nan_min(lstmfast::nan_max(q, ({T})eps), ({T})one_minus_eps);
    const {T} u = {T}(q == qc ? 1 : 0) / (qc * s);
    for (long long c = 0; c < cols; ++c) gr[c] = c == label ? u * q - u : u * q;
    values[r] = -lstmfast::lf_log(qc);
  }}"""
_HOST_ACTIVATION["dropout_keep"] = """
  for (long long g = 0; g * 4 < n; ++g) {{
    const lstmfast::Philox4 r = lstmfast::dropout_words((unsigned long long)g, *offset, key0, key1);
    for (int j = 0; j < 4 && g * 4 + j < n; ++j)
      keep[g * 4 + j] = lstmfast::dropout_value<{T}>(r.w[j], rate, ({T})scale);
  }}
  *offset += 1;
  (void)done;"""


def _host_activation_source():
    lines = []
    for kernel in _kernels.ACTIVATION_NAMES:
        params = kernel_params(kernel, _kernels.ACTIVATION_KERNEL_FILE)
        for ctype in ("float", "double"):
            decl = ", ".join(f"{t.replace('T*', ctype + '*')} {n}" for t, n in params)
            lines += [f"void {kernel}_{ctype}({decl}) {{", _HOST_ACTIVATION[kernel].format(T=ctype), "}"]
    return lines


def test_pointwise_math_compiles_as_host_code(host_library):
    for kernel in _kernels.KERNEL_NAMES + (_kernels.OPTIM_UPDATE,) + _kernels.ACTIVATION_NAMES:
        for ctype in ("float", "double"):
            assert hasattr(host_library, f"{kernel}_{ctype}")
    assert hasattr(host_library, _kernels.OPTIM_CLIP_SCALES)


# ---------------------------------------------------------------------------------------------
# A stand-in for CuPy: NumPy arrays that say which device they are on, and kernels that run the
# host-compiled element functions after checking every argument.
# ---------------------------------------------------------------------------------------------

class FakeDevice:
    """cupy.cuda.Device: an id, and a context manager that makes it current."""

    current = [0]

    def __init__(self, device_id=None):
        self.id = FakeDevice.current[-1] if device_id is None else device_id

    def __enter__(self):
        FakeDevice.current.append(self.id)
        return self

    def __exit__(self, *exc):
        FakeDevice.current.pop()
        return False


class Capture:
    """Stream capture on the stand-in, as CUDA does it: while a stream captures, the device work
    queued (ufuncs, copies, fills, raw kernels) is recorded, not run; ``FakeGraph.launch`` runs the
    record. Arrays are recorded by reference and Python scalars and host data by value, so a replay
    repeats what a graph would: the capture's host data, the current contents of device arrays.
    A device read while capturing raises, as CUDA refuses one."""

    ops = None  # the record while a capture is in progress

    @classmethod
    def add(cls, op):
        cls.ops.append(op)


class FakeGraph:
    def __init__(self, ops):
        self.ops = ops
        self.launches = 0

    def launch(self, stream=None):
        assert Capture.ops is None, "a graph launched while capturing"
        self.launches += 1
        Launches.record("graph")
        for op in self.ops:
            op()


class FakeStream:
    """cupy.cuda.Stream: work runs in order, at once (or is recorded, while capturing)."""

    ptr = 0
    current = []

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.capturing = False

    def __enter__(self):
        FakeStream.current.append(self)
        return self

    def __exit__(self, *exc):
        FakeStream.current.pop()
        return False

    def begin_capture(self, mode=None):
        assert Capture.ops is None and FakeStream.current and FakeStream.current[-1] is self, \
            "capture begins on a stream made current with `with stream:`"
        Capture.ops, self.capturing = [], True

    def end_capture(self):
        assert self.capturing
        ops, Capture.ops, self.capturing = Capture.ops, None, False
        return FakeGraph(ops)

    def is_capturing(self):
        return self.capturing


class FakeEvent:
    """cupy.cuda.Event: recorded on a stream; synchronize() returns at once (the work is done)."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.recorded = False

    def record(self, stream=None):
        self.recorded = True

    def synchronize(self):
        assert self.recorded, "synchronize() on an event never recorded"
        assert Capture.ops is None, "Event.synchronize() while capturing a graph"


class Transfers:
    """Counts the device-to-host reads of the stand-in's arrays (see FakeDeviceArray), with the line
    of lstmfast that asked for each, so a failing count says where the reads are."""

    count = 0
    sites: list = []

    @classmethod
    def reset(cls):
        cls.count, cls.sites = 0, []

    @classmethod
    def record(cls, how):
        if Capture.ops is not None:
            raise RuntimeError(f"{how} of a device array while capturing a graph "
                               f"(cudaErrorStreamCaptureUnsupported)")
        cls.count += 1
        frame = sys._getframe(2)
        while frame is not None and os.sep + "lstmfast" + os.sep not in frame.f_code.co_filename:
            frame = frame.f_back  # the first frame in the package: where the read was asked for
        where = "outside lstmfast" if frame is None else \
            f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} ({frame.f_code.co_name})"
        cls.sites.append(f"{how} at {where}")


class Launches:
    """Counts the work the stand-in's arrays queue on the device: every ufunc call (an elementwise
    or reduction kernel in CuPy), every assignment into a device array (a copy kernel) and every
    raw-kernel launch (HostKernel, HostOptimKernel). ``kernels`` lists the raw kernels by name."""

    count = 0
    kernels: list = []

    @classmethod
    def reset(cls):
        cls.count, cls.kernels = 0, []

    @classmethod
    def record(cls, kernel=None):
        cls.count += 1
        if kernel is not None:
            cls.kernels.append(kernel)


class FakeDeviceArray(np.ndarray):
    """A NumPy array posing as a cupy.ndarray on GPU ``device_id``.

    Like CuPy, reductions, arithmetic and indexing give 0-d device arrays, never host scalars, and
    every way a value reaches the host is counted by ``Transfers``: ``.get()``, ``cupy.asnumpy``,
    ``float``/``int``/``bool``/``operator.index``/``complex``, ``.item()``, ``.tolist()`` and
    formatting. What it cannot see: ``np.asarray``/``np.array`` of a device array (NumPy copies an
    ndarray subclass's buffer without a hook; real CuPy refuses them with a TypeError, so they fail
    on a GPU instead), and NumPy functions that return host scalars from it without a ufunc."""

    def __array_finalize__(self, obj):
        self.device_id = getattr(obj, "device_id", FakeDevice.current[-1])

    def __array_wrap__(self, obj, context=None, return_scalar=False):
        return super().__array_wrap__(obj, context, False)  # a 0-d result stays on the device

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        Launches.record()  # one CuPy kernel
        for a in (*inputs, *(out or ())):
            if type(a) is np.ndarray and a.ndim:  # CuPy takes scalars with its arrays, not NumPy arrays
                raise TypeError(f"Unsupported type {type(a)} (numpy.{ufunc.__name__} of a cupy.ndarray and a "
                                f"numpy.ndarray of shape {a.shape})")
        plain = [np.asarray(a).view(np.ndarray) if isinstance(a, FakeDeviceArray) else a for a in inputs]
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, FakeDeviceArray) else o for o in out)
        if Capture.ops is not None and (out is not None or method == "at"):  # writes existing arrays
            Capture.add(lambda: getattr(ufunc, method)(*plain, **kwargs))
            return None if out is None else (out[0] if len(out) == 1 else out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        result = None if result is None else _stay_on(result, self.device_id)
        if Capture.ops is not None and isinstance(result, FakeDeviceArray):  # a new array: recomputed
            target = result.view(np.ndarray)
            into = dict(kwargs, out=(target,) if method == "__call__" else target)
            Capture.add(lambda: getattr(ufunc, method)(*plain, **into))
        return result

    def __setitem__(self, key, value):
        Launches.record()  # a copy (or fill) kernel
        if Capture.ops is not None:
            value = np.array(value) if not isinstance(value, FakeDeviceArray) else value  # host data: as captured
            Capture.add(lambda: np.ndarray.__setitem__(self, key, value))
            return
        np.ndarray.__setitem__(self, key, value)

    def fill(self, value):
        Launches.record()
        if Capture.ops is not None:
            Capture.add(lambda: np.ndarray.fill(self, value))
            return
        np.ndarray.fill(self, value)

    def _new_array(self, method, *args, **kwargs):
        """A method that makes a new array (astype, copy, argmax...): while capturing, recomputed at
        each replay into the array it returned."""
        result = getattr(np.ndarray, method)(self, *args, **kwargs)
        if isinstance(result, np.ndarray) and not np.shares_memory(result, self):
            Launches.record()
            result = _stay_on(result, self.device_id)
            if Capture.ops is not None:
                target = result.view(np.ndarray)
                Capture.add(lambda: np.copyto(target, getattr(np.ndarray, method)(self, *args, **kwargs)))
        return result

    @property
    def data(self):
        """``a.data.ptr``: the address of the first element (a host address in the stand-in)."""
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def __getitem__(self, key):
        result = _stay_on(super().__getitem__(key), self.device_id)  # one element: a 0-d device array
        if Capture.ops is not None and not np.shares_memory(result, self):  # fancy indexing: a gather kernel
            target = result.view(np.ndarray)
            Capture.add(lambda: np.copyto(target, np.ndarray.__getitem__(self, key)))
        return result

    def __array_function__(self, func, types, args, kwargs):
        # NumPy functions that are not ufuncs (np.where, np.clip, ...): CuPy's run on the device
        if Capture.ops is not None and func is np.copyto:
            Capture.add(lambda: super(FakeDeviceArray, self).__array_function__(func, types, args, kwargs))
            return None
        result = _stay_on(super().__array_function__(func, types, args, kwargs), self.device_id)
        if Capture.ops is not None and isinstance(result, FakeDeviceArray):
            target = result.view(np.ndarray)
            Capture.add(lambda: np.copyto(target, super(FakeDeviceArray, self).__array_function__(func, types, args,
                                                                                                kwargs)))
        return result

    @property
    def device(self):
        return FakeDevice(self.device_id)

    def get(self, stream=None):
        Transfers.record("get()")
        return np.array(self)

    def set(self, host, stream=None):
        assert not isinstance(host, FakeDeviceArray) and host.shape == self.shape and host.dtype == self.dtype
        assert stream is None or isinstance(stream, FakeStream)
        if Capture.ops is not None:
            snapshot = np.array(host)  # CuPy stages it: a replay copies what was there at capture
            Capture.add(lambda: np.ndarray.__setitem__(self, Ellipsis, snapshot))
            return
        np.ndarray.__setitem__(self, Ellipsis, host)

    def _read(self, how):
        Transfers.record(how)
        return np.ndarray.item(self) if self.size == 1 else None

    def __float__(self):
        if self.size != 1:
            raise TypeError("only one-element arrays can be converted to Python scalars")
        return float(self._read("float()"))

    def __int__(self):
        if self.size != 1:
            raise TypeError("only one-element arrays can be converted to Python scalars")
        return int(self._read("int()"))

    def __complex__(self):
        return complex(self._read("complex()"))

    def __index__(self):
        Transfers.record("operator.index()")
        return np.ndarray.__index__(np.asarray(self))

    def __bool__(self):
        Transfers.record("bool()")
        return np.ndarray.__bool__(np.asarray(self))

    def item(self, *args):
        Transfers.record("item()")
        return np.ndarray.item(np.asarray(self), *args)

    def tolist(self):
        Transfers.record("tolist()")
        return np.ndarray.tolist(np.asarray(self))

    def __format__(self, spec):
        Transfers.record("format()")
        return np.asarray(self).__format__(spec)


def _making_a_new_array(method):
    return lambda self, *args, **kwargs: self._new_array(method, *args, **kwargs)


for _method in ("astype", "copy", "argmax", "argmin", "cumsum", "take", "repeat", "ravel", "flatten"):
    setattr(FakeDeviceArray, _method, _making_a_new_array(_method))


def _stay_on(out, device_id):
    """The result of a NumPy call on device arrays as CuPy gives it: arrays (and scalars, as 0-d
    arrays) on the device, in tuples and lists as they came."""
    if isinstance(out, (tuple, list)):
        return type(out)(_stay_on(o, device_id) for o in out)
    if isinstance(out, np.generic) or (isinstance(out, np.ndarray) and not isinstance(out, FakeDeviceArray)):
        out = np.asarray(out).view(FakeDeviceArray)
        out.device_id = device_id
    return out


def _on_device(array, device_id=None):
    out = np.array(array, copy=True).view(FakeDeviceArray)
    out.device_id = FakeDevice.current[-1] if device_id is None else device_id
    return out


# What the stand-in's cupy.empty holds: NaN, so that a read of memory nothing wrote shows in the results.
_GARBAGE = {"f": np.nan, "i": -(2**31), "u": 2**31}


def make_fake_cupy(device_count=1, count_error=None):
    """A module named cupy with the part of CuPy's API that lstmfast.cuda uses."""
    cp = types.ModuleType("cupy")
    cp.ndarray = FakeDeviceArray

    def created(out, remake):
        """A new device array; while capturing, ``remake()`` (its values, from what the capture
        read) is copied into it at each replay."""
        if Capture.ops is not None:
            target = out.view(np.ndarray)
            Capture.add(lambda: np.copyto(target, remake()))
        return out

    def asarray(a, dtype=None):
        if isinstance(a, FakeDeviceArray) and (dtype is None or a.dtype == dtype):
            return a
        if isinstance(a, FakeDeviceArray):
            return created(_on_device(np.asarray(a, dtype=dtype)), lambda: np.asarray(a, dtype=dtype))
        snapshot = np.array(a, dtype=dtype)  # host data: CuPy stages it, a replay repeats the capture's
        return created(_on_device(snapshot), lambda: snapshot)

    def ascontiguousarray(a, dtype=None):
        assert isinstance(a, FakeDeviceArray), f"cupy.ascontiguousarray got a {type(a).__name__}"
        if a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
            return a
        return created(_on_device(np.ascontiguousarray(a, dtype=dtype), a.device_id),
                       lambda: np.ascontiguousarray(a.view(np.ndarray), dtype=dtype))

    def get_device_count():
        if count_error is not None:
            raise count_error
        return device_count

    cp.asarray = asarray
    cp.ascontiguousarray = ascontiguousarray
    cp.empty = lambda shape, dtype=float: _on_device(np.full(shape, _GARBAGE[np.dtype(dtype).kind], dtype))
    cp.zeros = lambda shape, dtype=float: created(_on_device(np.zeros(shape, dtype)), lambda: 0)
    cp.full = lambda shape, value, dtype=None: created(_on_device(np.full(shape, value, dtype)), lambda: value)

    def concatenate(arrays, axis=0):
        assert all(isinstance(a, FakeDeviceArray) for a in arrays), "cupy.concatenate got host arrays"
        return created(_on_device(np.concatenate(arrays, axis=axis)),
                       lambda: np.concatenate([a.view(np.ndarray) for a in arrays], axis=axis))

    cp.concatenate = concatenate
    cp.asfortranarray = lambda a: created(_on_device(np.asfortranarray(a), a.device_id),
                                          lambda: a.view(np.ndarray))
    cp.matmul = lambda a, b, out=None: np.matmul(a, b, out=out)

    def asnumpy(a, stream=None):
        if isinstance(a, FakeDeviceArray):
            Transfers.record("cupy.asnumpy()")
        return np.array(a)

    def stack(arrays, axis=0):
        assert all(isinstance(a, FakeDeviceArray) for a in arrays), "cupy.stack got host arrays"
        return created(_on_device(np.stack(arrays, axis=axis)),
                       lambda: np.stack([a.view(np.ndarray) for a in arrays], axis=axis))

    cp.asnumpy = asnumpy
    cp.stack = stack

    def numpy_function(name):
        # The rest of CuPy's NumPy-like API (cupy.where, cupy.log, ...): NumPy's, results on the device.
        function = getattr(np, name)
        if isinstance(function, type) or not callable(function):
            return function  # dtypes and constants
        def run(*args, **kwargs):
            out = _stay_on(function(*args, **kwargs), FakeDevice.current[-1])
            if Capture.ops is not None and isinstance(out, FakeDeviceArray) and not any(
                    isinstance(a, FakeDeviceArray) for a in [*args, *kwargs.values()]):
                snapshot = np.array(out)  # made from host values only (cupy.arange...): the same each replay
                created(out, lambda: snapshot)
            return out  # from device arrays: recorded by their dispatch
        return run

    cp.__getattr__ = numpy_function

    def add_at(out, index, rows):
        assert all(isinstance(a, FakeDeviceArray) for a in (out, index, rows)), "cupy.add.at got host arrays"
        np.add.at(out, index, rows)

    cp.add = types.SimpleNamespace(at=add_at)
    stream = FakeStream()
    FakeStream.current = []

    @contextlib.contextmanager
    def using_allocator(allocator=None):
        yield

    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count),
                                    Device=FakeDevice, Event=FakeEvent,
                                    get_current_stream=lambda: FakeStream.current[-1] if FakeStream.current else stream,
                                    alloc_pinned_memory=lambda nbytes: bytearray(nbytes), Stream=FakeStream,
                                    MemoryPool=lambda: types.SimpleNamespace(malloc=None),
                                    using_allocator=using_allocator)
    Capture.ops = None
    return cp


_C_SCALARS = {"long long": (np.int64, ctypes.c_longlong), "int": (np.int32, ctypes.c_int)}


def c_arguments(kernel, params, args, dtype_of, size_ok=None) -> list:
    """A kernel's CuPy-style launch arguments as the host build's C arguments, checked as a real
    launch needs them: scalars of their C type, None for a null pointer, and arrays that are
    C-contiguous stand-in device arrays of the dtype ``dtype_of(C type)`` on the launching GPU (and
    of a size ``size_ok(name, array)`` accepts), passed by address."""
    device = FakeDevice.current[-1]
    c_args = []
    for (ctype, name), value in zip(params, args):
        where = f"{kernel} argument {name}"
        if ctype in _C_SCALARS:
            assert type(value) is _C_SCALARS[ctype][0], f"{where}: {type(value).__name__}, want {ctype}"
            c_args.append(int(value))
        elif value is None:
            c_args.append(None)
        else:
            want = dtype_of(ctype)
            assert isinstance(value, FakeDeviceArray), f"{where}: {type(value).__name__}"
            assert value.dtype == want, f"{where}: dtype {value.dtype}, want {want}"
            assert value.flags.c_contiguous, f"{where}: not contiguous"
            assert value.device_id == device, f"{where}: on GPU {value.device_id}, launch on GPU {device}"
            assert size_ok is None or size_ok(name, value), f"{where}: {value.shape}"
            c_args.append(value.ctypes.data)
    return c_args


class HostKernel:
    """One step kernel called CuPy's way, ``kernel(grid, block, args)``, run by the host library.
    Checks what a real launch would silently get wrong."""

    def __init__(self, library, kernel, dtype):
        self.kernel, self.dtype = kernel, np.dtype(dtype)
        self.params = kernel_params(kernel)
        self.shapes = shape_comments()
        self.function = getattr(library, f"{kernel}_{_kernels.C_TYPES[self.dtype]}")
        self.function.restype = None
        self.function.argtypes = [_C_SCALARS[t][1] if t in _C_SCALARS else ctypes.c_void_p for t, _ in self.params]
        self.launches = 0

    def __call__(self, grid, block, args):
        assert len(args) == len(self.params), f"{self.kernel}: {len(args)} arguments for {len(self.params)} parameters"
        sizes = dict(zip("TBH", (int(args[1]), int(args[2]), int(args[3]))))
        threads = math.prod(grid) * math.prod(block)
        assert 0 < math.prod(block) <= 1024 and threads >= sizes["B"] * sizes["H"] > 0, (grid, block, sizes)
        c_args = c_arguments(self.kernel, self.params, args,
                             lambda ctype: np.dtype(np.int32) if "int" in ctype else self.dtype,
                             lambda name, value: value.size == _elements(self.shapes[name], sizes))
        if Capture.ops is not None:
            Capture.add(lambda args=args: self.function(*c_args))  # args: kept alive
        else:
            self.function(*c_args)
        self.launches += 1
        Launches.record(self.kernel)


_C_POINTERS = {"const long long*": np.int64, "double*": np.float64, "const double*": np.float64,
               "unsigned int*": np.uint32}


class HostOptimKernel:
    """One optimizer kernel (optim_kernels.cu) called CuPy's way, run by the host library over the
    same pointer table. Checks the launch as HostKernel does: argument count and types, the
    table's shape and element numbering, a grid of ceil(total / chunk) blocks of OPTIM_THREADS, and
    (clip scales) that the running sums and block counter are zero at launch."""

    def __init__(self, library, kernel, dtype=None):
        self.kernel = kernel
        self.params = kernel_params(kernel, _kernels.OPTIM_KERNEL_FILE)
        self.width = 7 if kernel == _kernels.OPTIM_UPDATE else 4
        self.function = getattr(library, kernel if dtype is None else f"{kernel}_{_kernels.C_TYPES[np.dtype(dtype)]}")
        self.function.restype = None
        self.function.argtypes = [{"long long": ctypes.c_longlong, "int": ctypes.c_int, "double": ctypes.c_double}
                                  .get(t, ctypes.c_void_p) for t, _ in self.params]

    def __call__(self, grid, block, args):
        assert len(args) == len(self.params), f"{self.kernel}: {len(args)} arguments for {len(self.params)}"
        named = dict(zip((n for _, n in self.params), args))
        device = FakeDevice.current[-1]
        c_args = []
        for (ctype, name), value in zip(self.params, args):
            where = f"{self.kernel} argument {name}"
            if ctype in ("long long", "int", "double"):
                want = {"long long": np.int64, "int": np.int32, "double": np.float64}[ctype]
                assert type(value) is want, f"{where}: {type(value).__name__}, want {ctype}"
                c_args.append(value.item())
            elif value is None:
                assert name == "scales", f"{where} is null"
                c_args.append(None)
            else:
                assert isinstance(value, FakeDeviceArray), f"{where}: {type(value).__name__}"
                assert value.dtype == _C_POINTERS[ctype], f"{where}: dtype {value.dtype}"
                assert value.flags.c_contiguous and value.device_id == device, where
                c_args.append(value.ctypes.data)
        n, table, total, chunk = (int(named[k]) if k != "table" else named[k] for k in ("n_vars", "table", "total",
                                                                                       "chunk"))
        assert table.shape == (n, self.width), (self.kernel, table.shape)
        sizes = table[:, -1].view(np.ndarray)
        assert (table[:, -2].view(np.ndarray) == np.cumsum(sizes) - sizes).all() and sizes.sum() == total > 0
        assert block == (_kernels.OPTIM_THREADS,) and len(grid) == 1
        assert (grid[0] - 1) * chunk < total <= grid[0] * chunk, (grid, chunk, total)
        for name in ("scales", "sq"):
            assert named.get(name) is None or named[name].shape == (n,), name
        if "hyper" in named:
            assert named["hyper"].shape == (cuda_optim.HYPER,), named["hyper"].shape
        if self.kernel == _kernels.OPTIM_CLIP_SCALES:
            assert named["done"].shape == (1,)
            assert not named["sq"].view(np.ndarray).any() and not named["done"].view(np.ndarray).any(), \
                "the running sums must be zero between launches"
        if Capture.ops is not None:
            Capture.add(lambda args=args: self.function(*c_args))  # args: kept alive
        else:
            self.function(*c_args)
        Launches.record(self.kernel)


class HostActivationKernel:
    """One activation kernel (activation_kernels.cu) called CuPy's way, run by the host library.
    Checks the launch as HostKernel does: argument count and types, dtypes, contiguity, the device,
    equal sizes, a valid activation code, and a grid that covers every element (the elementwise
    kernels stride: any grid of ACTIVATION_THREADS) or every row (one warp per row). The dropout
    kernel's generator: a uint64 draw counter and a uint32 block counter, zero at launch."""

    SCALARS = {**_C_SCALARS, "double": (np.float64, ctypes.c_double), "unsigned int": (np.uint32, ctypes.c_uint)}
    COUNTERS = {"unsigned long long*": np.uint64, "unsigned int*": np.uint32}
    PER_ROW = {"values": None, "labels": np.int64}  # the loss kernels' [rows] arrays (None: dtype T)

    def __init__(self, library, kernel, dtype):
        self.kernel, self.dtype = kernel, np.dtype(dtype)
        self.params = kernel_params(kernel, _kernels.ACTIVATION_KERNEL_FILE)
        self.function = getattr(library, f"{kernel}_{_kernels.C_TYPES[self.dtype]}")
        self.function.restype = None
        self.function.argtypes = [self.SCALARS[t][1] if t in self.SCALARS else ctypes.c_void_p for t, _ in self.params]

    def __call__(self, grid, block, args):
        assert len(args) == len(self.params), f"{self.kernel}: {len(args)} arguments for {len(self.params)} parameters"
        assert block == (_kernels.ACTIVATION_THREADS,) and len(grid) == 1 and grid[0] >= 1, (grid, block)
        named = dict(zip((n for _, n in self.params), args))
        device = FakeDevice.current[-1]
        elements = int(named["n"]) if "n" in named else int(named["rows"]) * int(named["cols"])
        if "rows" in named:
            assert grid[0] * (_kernels.ACTIVATION_THREADS // 32) >= int(named["rows"]) > 0, (grid, named["rows"])
            assert int(named["cols"]) > 0
        elif "code" in named:
            assert int(named["code"]) in lcuda_activations.CODES.values(), named["code"]
        else:  # dropout_keep: four elements per thread
            assert grid[0] * _kernels.ACTIVATION_THREADS * 4 >= elements > 0 or grid[0] == 1024, (grid, elements)
            assert 0 <= float(named["rate"]) < 1 and not named["done"].view(np.ndarray).any()
        c_args = []
        for (ctype, name), value in zip(self.params, args):
            where = f"{self.kernel} argument {name}"
            if ctype in self.SCALARS:
                assert type(value) is self.SCALARS[ctype][0], f"{where}: {type(value).__name__}, want {ctype}"
                c_args.append(value.item())
            elif ctype in self.COUNTERS:
                assert isinstance(value, FakeDeviceArray) and value.dtype == self.COUNTERS[ctype], where
                assert value.shape == (1,) and value.device_id == device, where
                c_args.append(value.ctypes.data)
            else:
                dtype, size = self.dtype, elements
                if "rows" in named and name in self.PER_ROW:
                    dtype, size = self.PER_ROW[name] or self.dtype, int(named["rows"])
                assert isinstance(value, FakeDeviceArray), f"{where}: {type(value).__name__}"
                assert value.dtype == dtype and value.flags.c_contiguous, f"{where}: {value.dtype}"
                assert value.device_id == device, f"{where}: on GPU {value.device_id}, launch on GPU {device}"
                assert value.size == size, f"{where}: {value.size} elements, want {size}"
                c_args.append(value.ctypes.data)
        if Capture.ops is not None:
            Capture.add(lambda args=args: self.function(*c_args))  # args: kept alive
        else:
            self.function(*c_args)
        Launches.record(self.kernel)


def _host_only(function):
    def checked(*args, **kwargs):
        for name, a in [*enumerate(args), *kwargs.items()]:
            assert not isinstance(a, FakeDeviceArray), f"the CPU engine got a device array as argument {name}"
        return function(*args, **kwargs)
    return checked


_PACKAGE_DIR = os.path.dirname(os.path.abspath(lstmfast.__file__)) + os.sep


def _no_implicit_conversion(function):
    """``function`` (numpy.asarray and kin) refusing, as CuPy does, a device array given to it by
    lstmfast's code (the stand-in's arrays are NumPy arrays underneath, which NumPy would take)."""
    def refusing(a, *args, **kwargs):
        if isinstance(a, FakeDeviceArray) and sys._getframe(1).f_code.co_filename.startswith(_PACKAGE_DIR):
            raise TypeError(f"Implicit conversion to a NumPy array is not allowed (numpy.{function.__name__} of a "
                            f"cupy.ndarray): use .get() or cupy.asnumpy()")
        return function(a, *args, **kwargs)
    return refusing


def install_emulation(monkeypatch, host_library, **fake_options):
    cp = make_fake_cupy(**fake_options)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    for name in ("array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray"):
        monkeypatch.setattr(np, name, _no_implicit_conversion(getattr(np, name)))
    # The C++ engine would take the stand-in's arrays (NumPy underneath): refuse them.
    core = types.SimpleNamespace(forward=_host_only(ops._core.forward), backward=_host_only(ops._core.backward))
    monkeypatch.setattr(ops, "_core", core)
    monkeypatch.setattr(lcuda, "_gpu_count", None)
    kernels = {}

    def get(dtype):
        dtype = np.dtype(dtype)
        if dtype not in kernels:
            kernels[dtype] = _kernels.Kernels(*(HostKernel(host_library, k, dtype) for k in _kernels.KERNEL_NAMES))
        return kernels[dtype]

    monkeypatch.setattr(_kernels, "get", get)
    clip_scales = HostOptimKernel(host_library, _kernels.OPTIM_CLIP_SCALES)
    optim = {dtype: _kernels.OptimKernels(HostOptimKernel(host_library, _kernels.OPTIM_UPDATE, dtype), clip_scales)
             for dtype in _kernels.C_TYPES}
    monkeypatch.setattr(_kernels, "get_optim", lambda dtype: optim[np.dtype(dtype)])
    activation = {dtype: _kernels.ActivationKernels(*(HostActivationKernel(host_library, k, dtype)
                                                      for k in _kernels.ACTIVATION_NAMES))
                  for dtype in _kernels.C_TYPES}
    monkeypatch.setattr(_kernels, "get_activation", lambda dtype: activation[np.dtype(dtype)])
    monkeypatch.setattr(cuda_optim, "_SCRATCH", {})
    monkeypatch.setattr(cuda_dropout, "_GENERATORS", {})
    return cp


def real_cupy_with_gpu():
    """(cupy, None) when CuPy imports and sees a GPU, else (None, reason)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import cupy
    except Exception as e:
        return None, f"CuPy is not importable ({type(e).__name__}: {e})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return None, f"CuPy sees no GPU ({type(e).__name__}: {e})"
    if count == 0:
        return None, "CuPy sees no GPU (getDeviceCount() == 0)"
    return cupy, None


def device_side(name, request, monkeypatch):
    """The Side of a GPU engine: "emulated" (the stand-in), "gpu" (the recurrence on the step
    kernels) or "gpu-sequence" (on the sequence kernels wherever their weights fit on chip: all the
    sizes of the tests)."""
    if name == "emulated":
        return Side("emulated", install_emulation(monkeypatch, request.getfixturevalue("host_library")))
    return gpu_side(monkeypatch, "never" if name == "gpu" else "always")


@pytest.fixture(params=["emulated", "gpu", "gpu-sequence"])
def side(request, monkeypatch):
    return device_side(request.param, request, monkeypatch)


def gpu_side(monkeypatch, sequence_kernels):
    cupy, reason = real_cupy_with_gpu()
    if cupy is None:
        pytest.skip(reason)
    monkeypatch.setattr(lcuda, "_gpu_count", None)
    monkeypatch.setattr(cuda_ops, "SEQUENCE_KERNELS", sequence_kernels)
    return Side("gpu" if sequence_kernels == "never" else "gpu-sequence", cupy)


@pytest.fixture
def gpu(monkeypatch):
    return gpu_side(monkeypatch, "auto")


@pytest.fixture(params=["emulated", "gpu"])
def model_side(request, monkeypatch):
    if request.param == "emulated":
        return Side("emulated", install_emulation(monkeypatch, request.getfixturevalue("host_library")))
    return gpu_side(monkeypatch, "auto")


@pytest.fixture
def emulated(monkeypatch, host_library):
    return Side("emulated", install_emulation(monkeypatch, host_library))


@pytest.fixture(autouse=True)
def restore_backend(monkeypatch):
    monkeypatch.setattr(ops, "_backend", ops.get_backend())


# ---------------------------------------------------------------------------------------------
# (c) The GPU engine against the CPU engine, and how it runs (the oracle tests are in test_ops.py).
# ---------------------------------------------------------------------------------------------

def run_cuda(side, args, incoming, backend=None):
    out = ops.lstm_forward(**side.kwargs_to_device(args), backend=backend)
    grads = ops.lstm_backward(out.cache, **side.kwargs_to_device(incoming), backend=backend)
    return out, grads


def to_host(side, out, grads):
    return host(side, out, grads)


def all_host_arrays(out, grads):
    return [(name, getattr(out, name)) for name in OUTPUT_FIELDS] + \
           [(name, getattr(grads, name)) for name in GRAD_FIELDS if getattr(grads, name) is not None]


def test_emulation_launches_one_kernel_per_step(emulated):
    args, incoming = small_case(np.float32, T=5, B=3, H=4)
    out, grads = run_cuda(emulated, args, incoming)
    kernels = _kernels.get(np.float32)
    assert (kernels.forward_step.launches, kernels.backward_step.launches) == (5, 5)


def run_cpu(args, incoming):
    out = ops.lstm_forward(**args)
    return out, ops.lstm_backward(out.cache, **incoming)


def count_sequence_launches(monkeypatch):
    launches = []
    real = cuda_ops._launch_sequence

    def counting(cp, kernel, plan, args):
        launches.append(plan)
        return real(cp, kernel, plan, args)

    monkeypatch.setattr(cuda_ops, "_launch_sequence", counting)
    return launches


@pytest.mark.parametrize("B, launches",
                         [(1, 2), (cuda_ops.SEQUENCE_MAX_BATCH, 2), (cuda_ops.SEQUENCE_MAX_BATCH + 1, 0)])
def test_auto_runs_small_batches_as_one_launch(B, launches, gpu, monkeypatch):
    plans = count_sequence_launches(monkeypatch)
    args, incoming = small_case(np.float32, T=4, B=B, H=8)
    run_cuda(gpu, args, incoming)
    assert len(plans) == launches


# The choice itself, on an H100's limits (132 SMs, 227 KiB of shared memory per block), no GPU needed.
@pytest.mark.parametrize("B, H, dtype, forward, used", [
    (1, 512, np.float32, True, True), (64, 512, np.float32, True, True), (64, 512, np.float32, False, True),
    (65, 512, np.float32, True, False),            # over SEQUENCE_MAX_BATCH
    (64, 1024, np.float32, True, False),           # h of 64 rows does not fit beside the weights
    (64, 1024, np.float32, False, False),          # fits, but B*H is over SEQUENCE_MAX_BACKWARD_ELEMENTS
    (16, 1024, np.float32, False, True), (16, 1024, np.float64, False, False),  # 8 rows of 4H doubles: 256 KiB
    (16, 2048, np.float32, True, False), (1, 1, np.float64, True, True)])
def test_auto_choice_of_the_sequence_kernels(B, H, dtype, forward, used, monkeypatch):
    monkeypatch.setattr(cuda_ops, "_device_limits", lambda device_id: (132, 227 * 1024))
    real_cupy_like = types.SimpleNamespace(RawModule=object)
    plan = cuda_ops._sequence_plan(real_cupy_like, 0, B, H, dtype, forward)
    assert (plan is not None) == used, plan
    if plan is not None:
        assert plan.blocks <= 132 and plan.units * plan.blocks >= H and plan.shared_bytes <= 227 * 1024
    monkeypatch.setattr(cuda_ops, "SEQUENCE_KERNELS", "never")
    assert cuda_ops._sequence_plan(real_cupy_like, 0, B, H, dtype, forward) is None


def test_sequence_kernels_are_not_used_where_the_weights_do_not_fit(gpu, monkeypatch):
    monkeypatch.setattr(cuda_ops, "SEQUENCE_KERNELS", "always")
    sms, shared = cuda_ops._device_limits(gpu.xp.cuda.Device().id)
    H = 64 * sms  # 4 * 64 columns of 4H float64 values per block: 512 KiB, over every GPU's limit
    assert cuda_ops._sequence_plan(gpu.xp, gpu.xp.cuda.Device().id, 1, H, np.float64, forward=False) is None
    assert cuda_ops._sequence_plan(gpu.xp, gpu.xp.cuda.Device().id, 1, 8, np.float64, forward=False) is not None


# Hidden sizes around the number of SMs: one unit per block, several, a last block with fewer.
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("H_per_sm", [0.5, 1, 1.5, 2.25], ids=["H<SMs", "H=SMs", "H=1.5SMs", "H=2.25SMs"])
def test_sequence_kernels_across_block_splits(H_per_sm, dtype, monkeypatch):
    side = gpu_side(monkeypatch, "always")
    plans = count_sequence_launches(monkeypatch)
    sms, _ = cuda_ops._device_limits(side.xp.cuda.Device().id)
    H = max(1, int(H_per_sm * sms))
    args, incoming = small_case(dtype, T=5, B=3, X=7, H=H, lengths="random", seed=H)
    want = all_host_arrays(*run_cpu(args, incoming))
    got = all_host_arrays(*to_host(side, *run_cuda(side, args, incoming)))
    assert len(plans) == 2 and plans[0].blocks * plans[0].units >= H > (plans[0].blocks - 1) * plans[0].units
    for (name, w), (_, g) in zip(want, got):
        assert_allclose(g, w, **TOLERANCES[dtype], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_cuda_path_matches_cpu_engine(dtype, side):
    args, incoming = small_case(dtype, T=6, B=13, X=9, H=33, lengths="random", activation="hard_sigmoid")
    want = all_host_arrays(*run_cpu(args, incoming))
    got = all_host_arrays(*to_host(side, *run_cuda(side, args, incoming)))
    for (name, w), (_, g) in zip(want, got):
        assert_allclose(g, w, **TOLERANCES[dtype], err_msg=name)


@pytest.mark.parametrize("sizes", [dict(B=0), dict(X=0), dict(T=1, B=1, X=1, H=1)], ids=["B0", "X0", "all1"])
def test_degenerate_sizes_match_the_cpu_engine(sizes, side):
    args, incoming = small_case(np.float64, **sizes)
    want = all_host_arrays(*run_cpu(args, incoming))
    got = all_host_arrays(*to_host(side, *run_cuda(side, args, incoming)))
    assert [name for name, _ in got] == [name for name, _ in want]
    for (name, w), (_, g) in zip(want, got):
        assert g.shape == w.shape, name
        assert_allclose(g, w, **TOLERANCES[np.float64], err_msg=name)


def test_arrays_on_another_device_run_there(emulated):
    args, incoming = small_case(np.float32)
    on_one = {k: (_on_device(v, 1) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    out = ops.lstm_forward(**on_one)
    grads = ops.lstm_backward(out.cache, **{k: _on_device(v, 1) for k, v in incoming.items()})
    for value in (out.y, out.h, out.c, grads.dx, grads.dkernel, grads.drecurrent_kernel, grads.dh0):
        assert value.device_id == 1
    _, ref_grads = run_cpu(args, incoming)
    assert_allclose(np.asarray(grads.dkernel), ref_grads.dkernel, **TOLERANCES[np.float32])


# ---------------------------------------------------------------------------------------------
# (c) The fused optimizer step on the device: the CPU step's results, in one launch per dtype (and
# one more for the scales of clipping by norm), whatever the number of variables.
# ---------------------------------------------------------------------------------------------

from test_fused_optim import CASES as OPTIM_CASES  # noqa: E402
from test_fused_optim import EXTRAS as OPTIM_EXTRAS  # noqa: E402
from test_fused_optim import RULES as OPTIM_RULES  # noqa: E402
from test_fused_optim import SHAPES as OPTIM_SHAPES  # noqa: E402


def run_optimizer(cls, cfg, dtypes, to_device, steps=4, nan=False, launches=None):
    """``steps`` steps of ``cls(**cfg)`` on variables of OPTIM_SHAPES (dtype per variable from
    ``dtypes``, cycled) placed by ``to_device``; returns host copies of (variables, slots) and
    appends the launches of each step to ``launches``."""
    rng = np.random.default_rng(3)
    dts = [dtypes[i % len(dtypes)] for i in range(len(OPTIM_SHAPES))]
    params = [to_device(rng.normal(size=s).astype(dt)) for s, dt in zip(OPTIM_SHAPES, dts)]
    opt = getattr(lstmfast.optimizers, cls)(**cfg)
    for step in range(steps):
        grads = [(rng.normal(size=s) * 3).astype(dt) for s, dt in zip(OPTIM_SHAPES, dts)]
        if nan and step == 1:
            grads[0][0, 0], grads[0][1, 2], grads[3][5] = np.nan, np.inf, -np.inf
        grads = [to_device(g) for g in grads]
        Launches.reset()
        opt.apply_gradients(zip(grads, params))
        if launches is not None:
            launches.append(list(Launches.kernels) if Launches.count == len(Launches.kernels) else Launches.count)
    assert opt._fused_vars is not None  # the fused step ran, on both sides
    return [ops.to_numpy(p) for p in params], opt.get_state()["slots"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cls,cfg,extra", OPTIM_CASES,
                         ids=[f"{c}-{OPTIM_RULES.index((c, k))}-{e}" for c, k, e in OPTIM_CASES])
def test_fused_optimizer_step_on_the_device_equals_the_cpu_step(cls, cfg, extra, dtype, emulated):
    cfg = {**cfg, **OPTIM_EXTRAS[extra]}
    want_p, want_s = run_optimizer(cls, cfg, [dtype], lambda a: a)
    launches = []
    got_p, got_s = run_optimizer(cls, cfg, [dtype], emulated.to_device, launches=launches)
    clips = extra in ("clipnorm", "global_clipnorm")
    # each step: the scales of clipping by norm (when asked), then one update of every variable
    assert launches == [[_kernels.OPTIM_CLIP_SCALES] * clips + [_kernels.OPTIM_UPDATE]] * 4, launches
    for got, want in zip(got_p + got_s, want_p + want_s):
        assert got.dtype == want.dtype and got.shape == want.shape
        if clips:  # the norms are summed in another order (in float64 on the device)
            assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-7)
        else:      # the same operations, rounded the same way
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("extra", ["clipvalue", "global_clipnorm", "clipnorm"])
def test_fused_optimizer_step_on_the_device_propagates_nan_and_inf(extra, emulated):
    cfg = {"learning_rate": 0.01, **({"clipvalue": 2.0} if extra == "clipvalue" else OPTIM_EXTRAS[extra])}
    want_p, want_s = run_optimizer("Adam", cfg, [np.float32], lambda a: a, nan=True)
    got_p, got_s = run_optimizer("Adam", cfg, [np.float32], emulated.to_device, nan=True)
    assert np.isnan(want_p[0]).any()
    for got, want in zip(got_p + got_s, want_p + want_s):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_fused_optimizer_step_on_the_device_with_two_dtypes(emulated):
    cfg = {"learning_rate": 0.01, "global_clipnorm": 2.0, "weight_decay": 0.05}
    want_p, want_s = run_optimizer("Adam", cfg, [np.float32, np.float64], lambda a: a)
    launches = []
    got_p, got_s = run_optimizer("Adam", cfg, [np.float32, np.float64], emulated.to_device, launches=launches)
    # one global norm over both dtypes; the scales of each dtype's variables gathered for its update
    assert launches == [[_kernels.OPTIM_CLIP_SCALES] + [_kernels.OPTIM_UPDATE] * 2] * 4, launches
    for got, want in zip(got_p + got_s, want_p + want_s):
        assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_fused_optimizer_step_on_the_device_refuses_bad_arguments(emulated):
    step = cuda_optim.FusedStep(np.float32)
    v = emulated.to_device(np.zeros((2, 3), np.float32))
    m = emulated.to_device(np.zeros((2, 3), np.float32))
    hyper = (0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, None, None, 1.0)
    with pytest.raises(ValueError, match=r"rule must be a rule code 0..9 \(cpp/optim.h\), got 10"):
        step(10, [v], [m], [()], *hyper)
    with pytest.raises(ValueError, match=r"gradient 0 must have shape \(2, 3\) \(its variable's\), got \(3, 2\)"):
        step(0, [v], [m.reshape(3, 2)], [()], *hyper)
    with pytest.raises(TypeError, match=r"gradient 0 must have dtype float32, got float64"):
        step(0, [v], [m.astype(np.float64)], [()], *hyper)
    with pytest.raises(TypeError, match=r"gradient 0 must be a cupy.ndarray, got ndarray"):
        step(0, [v], [np.zeros((2, 3), np.float32)], [()], *hyper)
    with pytest.raises(ValueError, match=r"rule 1 needs 1 slots per variable, got 0 for variable 0"):
        step(1, [v], [m], [()], *hyper)
    with pytest.raises(ValueError, match=r"the gradient of variable 0 shares memory with variable 0"):
        step(0, [v], [v], [()], *hyper)
    with pytest.raises(ValueError, match=r"exactly one of clipnorm and global_clipnorm"):
        cuda_optim.clip_scales([m], None, None)


# ---------------------------------------------------------------------------------------------
# (c) A short training loop: the same losses and weights from the CPU engine and the CUDA path.
# ---------------------------------------------------------------------------------------------

def train(to_device, to_host, steps=8, lr=0.5):
    """SGD on an LSTM (peepholes, lengths, dropout mask) + linear readout of the final h, MSE loss."""
    rng = np.random.default_rng(11)
    T, B, X, H = 7, 9, 4, 12
    f32 = np.float32
    x = rng.standard_normal((T, B, X)).astype(f32)
    target = rng.standard_normal((B, 1)).astype(f32)
    lengths = rng.integers(1, T + 1, size=B).astype(np.int32)
    mask = np.where(rng.random((B, H)) < 0.2, 0.0, 1.0 / 0.8).astype(f32)
    params = dict(kernel=0.3 * rng.standard_normal((X, 4 * H)), recurrent_kernel=0.3 * rng.standard_normal((H, 4 * H)),
                  bias=0.1 * rng.standard_normal(4 * H), peephole=0.1 * rng.standard_normal((3, H)),
                  readout=0.3 * rng.standard_normal((H, 1)))
    params = {k: to_device(v.astype(f32)) for k, v in params.items()}
    x, target, lengths, mask = to_device(x), to_device(target), to_device(lengths), to_device(mask)
    losses = []
    for _ in range(steps):
        out = ops.lstm_forward(x, params["kernel"], params["recurrent_kernel"], params["bias"],
                               peephole=params["peephole"], lengths=lengths, recurrent_dropout_mask=mask)
        err = out.h @ params["readout"] - target                  # [B,1]
        losses.append(float(to_host((err * err).mean())))
        dpred = (2.0 / B) * err
        dreadout = out.h.T @ dpred
        grads = ops.lstm_backward(out.cache, None, dh=dpred @ params["readout"].T)
        for name, grad in (("kernel", grads.dkernel), ("recurrent_kernel", grads.drecurrent_kernel),
                           ("bias", grads.dbias), ("peephole", grads.dpeephole), ("readout", dreadout)):
            params[name] = params[name] - f32(lr) * grad
    return losses, {k: to_host(v) for k, v in params.items()}


def test_training_loop_matches_cpu_engine(side):
    cpu_losses, cpu_params = train(lambda a: a, np.asarray)
    cuda_losses, cuda_params = train(side.to_device, side.to_host)
    assert cpu_losses[-1] < 0.7 * cpu_losses[0], f"the loop does not learn: {cpu_losses}"
    assert_allclose(cuda_losses, cpu_losses, rtol=1e-4)
    for name, value in cpu_params.items():
        assert_allclose(cuda_params[name], value, rtol=1e-3, atol=1e-4, err_msg=name)


# ---------------------------------------------------------------------------------------------
# (c) Models train end to end on the device: weights, gradients, activations, optimizer state, the
# loss and the metrics stay there; each batch moves once.
# ---------------------------------------------------------------------------------------------

from lstmfast import backend as lf_backend  # noqa: E402
from lstmfast.layers import LSTM, Bidirectional, Dense, Dropout, Embedding, TimeDistributed  # noqa: E402
from lstmfast.models import Sequential  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The GPU's dropout masks (lstmfast.cuda.dropout) on the host: Philox4x32-10 in NumPy, an oracle
# independent of lf_random.cuh, and a CPU run that draws the masks a GPU run draws.
# ---------------------------------------------------------------------------------------------

_MASK32 = (1 << 32) - 1


def philox4x32_10(counters, key):
    """Philox4x32-10 of ``counters`` (uint64 array [..., 4] of 32-bit words) with ``key`` (k0, k1)."""
    c = [counters[..., j].astype(np.uint64) for j in range(4)]
    k0, k1 = key
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        hi0, lo0, hi1, lo1 = p0 >> np.uint64(32), p0 & np.uint64(_MASK32), p1 >> np.uint64(32), p1 & np.uint64(_MASK32)
        c = [hi1 ^ c[1] ^ np.uint64(k0), lo1, hi0 ^ c[3] ^ np.uint64(k1), lo0]
        k0, k1 = (k0 + 0x9E3779B9) & _MASK32, (k1 + 0xBB67AE85) & _MASK32
    return np.stack(c, axis=-1)


def host_dropout_mask(shape, rate, dtype, key, draw):
    """The mask the GPU's generator gives for draw number ``draw`` (lstmfast.cuda.dropout)."""
    n = math.prod(shape)
    groups = np.arange(-(-n // 4), dtype=np.uint64)
    counters = np.stack([groups & np.uint64(_MASK32), groups >> np.uint64(32),
                         np.full_like(groups, draw & _MASK32), np.full_like(groups, draw >> 32)], axis=-1)
    words = philox4x32_10(counters, key).reshape(-1)[:n]
    uniform = (words >> np.uint64(8)).astype(np.float64) / 2.0 ** 24
    dtype = np.dtype(dtype)
    return np.where(uniform >= rate, dtype.type(1 / (1 - rate)), dtype.type(0)).reshape(shape)


@contextlib.contextmanager
def gpu_dropout_on_the_host():
    """Run CPU code with the dropout masks a GPU run draws: the layers' keys and the draw counter
    as lstmfast.cuda.dropout keeps them, the masks from host_dropout_mask."""
    draws = [0]
    real_mask, real_reset = ops.device_dropout_mask, cuda_dropout.reset

    def mask(like, shape, rate, dtype, key):
        if type(like) is not np.ndarray:
            return real_mask(like, shape, rate, dtype, key)
        if np.dtype(dtype) not in (np.float32, np.float64):
            return None
        draws[0] += 1
        return host_dropout_mask(tuple(shape), rate, dtype, key(), draws[0] - 1)

    def reset():
        draws[0] = 0
        real_reset()

    ops.device_dropout_mask, cuda_dropout.reset = mask, reset
    try:
        yield
    finally:
        ops.device_dropout_mask, cuda_dropout.reset = real_mask, real_reset


def tutorial_model():
    """The IMDB tutorial's shape: Embedding, LSTM with both dropouts, sigmoid Dense; Adam."""
    model = Sequential([Embedding(50, 8, input_length=6), LSTM(10, dropout=0.2, recurrent_dropout=0.2),
                        Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(5)
    return model, rng.integers(0, 50, (40, 6)), (rng.random((40, 1)) < 0.5).astype(np.float32)


def sequence_model():
    """Per-step outputs: LSTM(return_sequences) -> Dropout -> TimeDistributed softmax; SGD momentum."""
    model = Sequential([LSTM(7, return_sequences=True, input_shape=(5, 3)), Dropout(0.25),
                        TimeDistributed(Dense(4, activation="softmax"))])
    model.compile(optimizer=lstmfast.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(6)
    return model, rng.standard_normal((24, 5, 3)).astype(np.float32), rng.integers(0, 4, (24, 5))


def bidirectional_model():
    model = Sequential([Bidirectional(LSTM(6), input_shape=(4, 2)), Dense(2)])
    model.compile(optimizer="rmsprop", loss="mse")
    rng = np.random.default_rng(7)
    return model, rng.standard_normal((16, 4, 2)).astype(np.float32), rng.standard_normal((16, 2)).astype(np.float32)


def _padded_ids(rng, n, T, vocab):
    """Word ids with zero padding at the end of each row (lengths 0..T, one empty row)."""
    ids = rng.integers(1, vocab, (n, T))
    lengths = rng.integers(0, T + 1, n)
    lengths[0] = 0
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return ids


def masked_model():
    """Embedding(mask_zero) -> LSTM(return_sequences: forward-filled outputs) -> LSTM(go_backwards)."""
    model = Sequential([Embedding(20, 5, mask_zero=True), LSTM(6, return_sequences=True),
                        LSTM(4, go_backwards=True), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(8)
    return model, _padded_ids(rng, 24, 7, 20), (rng.random((24, 1)) < 0.5).astype(np.float32)


def masked_sequence_model():
    """Masked per-step outputs: Bidirectional(return_sequences) zeroes masked steps; masked loss."""
    model = Sequential([Embedding(20, 5, mask_zero=True), Bidirectional(LSTM(3, return_sequences=True)),
                        TimeDistributed(Dense(2, activation="softmax"))])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(9)
    return model, _padded_ids(rng, 16, 6, 20), rng.integers(0, 2, (16, 6))


MODELS = {"tutorial": tutorial_model, "sequence": sequence_model, "bidirectional": bidirectional_model,
          "masked": masked_model, "masked-sequence": masked_sequence_model}


def fit_model(build, backend_name, epochs=3):
    """Train ``build()``'s model on a backend; on the CPU with the masks the GPU draws."""
    with gpu_dropout_on_the_host() if backend_name == "cpu" else contextlib.nullcontext():
        lf_backend.set_random_seed(3)
        model, x, y = build()
        lstmfast.set_backend(backend_name)
        try:
            history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
            prediction = model.predict(x, verbose=0)
        finally:
            lstmfast.set_backend("cpu")
    return model, history.history, prediction


def device_arrays_of(model):
    """Every weight, gradient and optimizer buffer of a model, named."""
    out = []
    for layer in model._all_layers():
        out += [(f"{layer.name}.{k}", w) for k, w in layer.weights.items()]
        out += [(f"{layer.name}.grad.{k}", w) for k, w in layer.grads.items()]
    for g, group in enumerate(model.optimizer._groups or ()):
        out += [(f"optimizer group {g} {k}", b) for k, b in group.buffers.items()]
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_models_train_on_the_device_like_on_the_cpu(name, model_side):
    build = MODELS[name]
    cpu_model, cpu_history, cpu_prediction = fit_model(build, "cpu")
    model, history, prediction = fit_model(build, "cuda")
    for key, values in cpu_history.items():
        assert_allclose(history[key], values, rtol=2e-4, atol=1e-6, err_msg=key)
    assert cpu_history["loss"][-1] < cpu_history["loss"][0], cpu_history
    assert type(prediction) is np.ndarray
    assert_allclose(prediction, cpu_prediction, rtol=1e-3, atol=1e-5)
    arrays = device_arrays_of(model)
    assert model.optimizer._groups and len(arrays) > 6
    for what, value in arrays:
        assert isinstance(value, model_side.xp.ndarray), f"{what} left the device: {type(value).__name__}"
    for got, want in zip(model.get_weights(), cpu_model.get_weights()):
        assert type(got) is np.ndarray
        assert_allclose(got, want, rtol=2e-3, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# (c) A training step reads nothing back from the device: the loss and the metrics accumulate
# there and are read once per epoch (issue 17). Counted on the stand-in (see Transfers).
# ---------------------------------------------------------------------------------------------

def char_rnn_model():
    """The char-rnn tutorial's shape: Embedding, two LSTMs returning sequences, softmax Dense per step."""
    model = Sequential([Embedding(30, 8, input_length=7), LSTM(12, return_sequences=True),
                        LSTM(12, return_sequences=True), Dense(30, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(12)
    return model, rng.integers(0, 30, (32, 7)), rng.integers(0, 30, (32, 7))


class StepReads(lstmfast.callbacks.Callback):
    """The device reads of each training step (from one batch's start to the next one's) and of
    each epoch, from Transfers."""

    def __init__(self, batch_end=False):
        super().__init__()
        self.steps, self.epochs, self.sites = [], [], []
        self._step_start = self._epoch_start = None
        if batch_end:  # a callback that reads the batch logs: Keras gives it Python floats
            self.on_train_batch_end = self._read_logs

    def _read_logs(self, batch, logs):
        assert all(type(v) is float for v in logs.values()), logs
        self.losses = getattr(self, "losses", []) + [logs["loss"]]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = Transfers.count

    def on_train_batch_begin(self, batch, logs=None):
        if batch:
            self.steps.append(Transfers.count - self._step_start)
            self.sites.append(Transfers.sites[len(Transfers.sites) - self.steps[-1]:])
        self._step_start = Transfers.count

    def on_epoch_end(self, epoch, logs=None):
        assert all(type(v) is float for v in logs.values()), logs
        self.epochs.append(Transfers.count - self._epoch_start)


def clipped_model():
    """The tutorial's shape with Adam(global_clipnorm): the gradient norm stays on the device."""
    model, x, y = tutorial_model()
    model.compile(optimizer=lstmfast.optimizers.Adam(global_clipnorm=0.5), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model, x, y


def masked_classifier_model():
    """Embedding(mask_zero) -> LSTM -> Dense: the mask and the lengths come from the host ids."""
    model = Sequential([Embedding(20, 5, mask_zero=True), LSTM(6), Dense(1, activation="sigmoid")])
    model.compile(optimizer=lstmfast.optimizers.RMSprop(clipnorm=1.0), loss="binary_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(8)
    return model, _padded_ids(rng, 24, 7, 20), (rng.random((24, 1)) < 0.5).astype(np.float32)


# The optimizer kernels each model's step launches (the clip-scales kernel for clipnorm/global_clipnorm).
# And whether its training step runs as a CUDA graph.
TRAINING_MODELS = {"tutorial": (tutorial_model, 1, True), "char-rnn": (char_rnn_model, 1, True),
                   "global-clipnorm": (clipped_model, 2, True), "masked": (masked_classifier_model, 2, False),
                   "masked-sequences": (masked_model, 1, False), "masked-loss": (masked_sequence_model, 1, False)}


class OptimizerLaunches:
    """The device work of each optimizer step (from Launches), around ``optimizer.apply_gradients``."""

    def __init__(self, optimizer, monkeypatch):
        self.steps = []
        real = optimizer.apply_gradients

        def counted(pairs):
            before = (Launches.count, len(Launches.kernels))
            real(pairs)
            self.steps.append((Launches.count - before[0], Launches.kernels[before[1]:]))

        monkeypatch.setattr(optimizer, "apply_gradients", counted)


@pytest.mark.parametrize("verbose", [0, 1], ids=["verbose0", "progbar"])
@pytest.mark.parametrize("name", list(TRAINING_MODELS))
def test_a_training_step_reads_nothing_back_from_the_device(name, verbose, emulated, capsys, monkeypatch):
    build, optimizer_kernels, graphed = TRAINING_MODELS[name]
    _, cpu_history, _ = fit_model(build, "cpu")
    lf_backend.set_random_seed(3)
    model, x, y = build()
    reads = StepReads()
    launches = OptimizerLaunches(model.optimizer, monkeypatch)
    lstmfast.set_backend("cuda")
    try:
        Transfers.reset()
        Launches.reset()
        history = model.fit(x, y, batch_size=8, epochs=3, verbose=verbose, callbacks=[reads]).history
    finally:
        lstmfast.set_backend("cpu")
    for key, values in cpu_history.items():
        assert_allclose(history[key], values, rtol=2e-4, atol=1e-6, err_msg=key)
    steps = len(x) // 8
    assert len(reads.steps) == 3 * (steps - 1)
    after_warm_up = reads.steps[steps - 1:]  # the first epoch's steps build the metrics and slots
    assert after_warm_up == [0] * len(after_warm_up), "\n".join(
        f"step {i}: {', '.join(sites)}" for i, sites in enumerate(reads.sites) if sites)
    # the epoch's loss and metrics come back in one copy (the progress bar draws from it too)
    assert reads.epochs[1:] == [1, 1], Transfers.sites
    # each optimizer step: one launch for all the variables (after the clip scales, when clipping by
    # norm), or, before a replay of the training step's graph, none (its host part)
    kernels = [_kernels.OPTIM_CLIP_SCALES] * (optimizer_kernels - 1) + [_kernels.OPTIM_UPDATE]
    replays = Launches.kernels.count("graph")
    assert launches.steps.count((0, [])) == replays, launches.steps
    assert [s for s in launches.steps if s != (0, [])] == [(optimizer_kernels, kernels)] * (
        3 * steps - replays + 2 * (replays > 0)), launches.steps  # + the capture's and the check's eager step
    # batch 1 learns the outputs' shapes, 2 runs eagerly, 3 too and is captured, 4 checks the graph
    assert replays == (3 * steps - 3 if graphed else 0)


def test_segment_sums_on_the_device_read_nothing_back(emulated):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((9, 4)).astype(np.float32)
    starts = np.array([0, 2, 3, 7])
    Transfers.reset()
    got = ops.segment_sum(emulated.to_device(a), starts)
    assert Transfers.count == 0 and isinstance(got, FakeDeviceArray)
    assert_allclose(np.asarray(got), np.add.reduceat(a, starts, axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"increasing segment starts from 0 below 9, got \[0, 3, 3\]"):
        ops.segment_sum(emulated.to_device(a), [0, 3, 3])


def test_a_device_array_mirrored_from_the_host_reads_back_its_host_values(emulated):
    host = np.array([[True, False], [True, True]])
    like = emulated.to_device(np.zeros(1, np.float32))
    device = ops.mirrored_on_device(like, host)
    assert isinstance(device, FakeDeviceArray) and (np.asarray(device) == host).all()
    Transfers.reset()
    back = ops.to_numpy(device)
    assert Transfers.count == 0 and (back == host).all() and not back.flags.writeable
    assert ops.mirrored_on_device(host, host) is host  # host data for the host: unchanged
    ops.to_numpy(device.copy())
    assert Transfers.count == 1  # another device array is read as usual


def test_a_callback_reading_batch_logs_gets_floats_at_one_read_per_step(emulated):
    lf_backend.set_random_seed(3)
    model, x, y = tutorial_model()
    reads = StepReads(batch_end=True)
    lstmfast.set_backend("cuda")
    try:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[reads])
    finally:
        lstmfast.set_backend("cpu")
    assert reads.steps[4:] == [1] * 4  # loss and accuracy in one copy
    assert len(reads.losses) == 10 and all(0 < v < 2 for v in reads.losses)


def test_batches_go_to_the_device_through_two_sets_of_pinned_buffers(emulated, monkeypatch):
    allocations = []
    real = emulated.xp.cuda.alloc_pinned_memory
    monkeypatch.setattr(emulated.xp.cuda, "alloc_pinned_memory", lambda n: allocations.append(n) or real(n))
    monkeypatch.setattr(ops, "_STAGING", {})
    lf_backend.set_random_seed(3)
    model, x, y = tutorial_model()
    lstmfast.set_backend("cuda")
    try:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    finally:
        lstmfast.set_backend("cpu")
    # one buffer per set, for 10 batches: the int32 ids (the Embedding's input dtype), from the second
    # batch on the float32 targets, checked on the host and copied with them, and Adam's step values
    assert sorted(allocations) == sorted([8 * 6 * 4] * 2 + [8 * 4] * 2 + [cuda_optim.HYPER * 8] * 2), allocations


@pytest.mark.parametrize("where", ["ids", "labels"])
def test_out_of_range_ids_and_labels_raise_on_the_device_without_reads(where, emulated):
    lf_backend.set_random_seed(3)
    model, x, y = char_rnn_model()
    if where == "ids":
        x[13, 4] = 30
        message = r"Embedding .*index 30 at position \(5, 4\) is out of range for input_dim=30"
    else:
        y[13, 4] = -1
        message = r"sparse_categorical_crossentropy: label -1 is out of range"
    lstmfast.set_backend("cuda")
    try:
        Transfers.reset()
        with pytest.raises(ValueError, match=message):
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    finally:
        lstmfast.set_backend("cpu")
    assert Transfers.count == 0, Transfers.sites  # checked on the host, before the copy


def test_a_model_moves_back_to_the_host_with_its_optimizer_state(model_side):
    model, history, _ = fit_model(tutorial_model, "cuda", epochs=1)
    state = model.optimizer.get_state()
    assert all(type(s) is np.ndarray for s in state["slots"]) and state["iterations"] == 5
    lf_backend.set_random_seed(4)
    model.fit(*tutorial_model()[1:], batch_size=8, epochs=1, verbose=0)  # backend "cpu": back on the host
    for what, value in device_arrays_of(model):
        assert type(value) is np.ndarray, f"{what} is still a {type(value).__name__}"
    assert model.optimizer.iterations == 10


# ---------------------------------------------------------------------------------------------
# (b) The wrapper's checks: every error names the argument, what was expected and what came.
# ---------------------------------------------------------------------------------------------

def good_device_args(side, dtype=np.float32):
    args, incoming = small_case(dtype, T=3, B=4, X=5, H=6, lengths="random")
    return side.kwargs_to_device(args), side.kwargs_to_device(incoming)


BAD_FORWARD = [
    # (id, exception, change, message fragments); change gets the good device arguments and the side.
    ("x-rank-2", ValueError, lambda a, s: dict(x=a["x"][0]), ["x", "[T, B, X]", "(4, 5)"]),
    ("x-int", TypeError, lambda a, s: dict(x=a["x"].astype(np.int32)), ["x", "float32 or float64", "int32"]),
    ("h0-shape", ValueError, lambda a, s: dict(h0=s.to_device(np.zeros((5, 6), np.float32))),
     ["h0", "[B, H]", "(4, 6)", "(5, 6)"]),
    ("c0-dtype", TypeError, lambda a, s: dict(c0=a["c0"].astype(np.float64)),
     ["c0", "float64", "x is float32", "astype(cupy.float32)"]),
    ("bias-int", TypeError, lambda a, s: dict(bias=a["bias"].astype(np.int64)), ["bias", "float array", "int64"]),
    ("kernel-transposed", ValueError, lambda a, s: dict(kernel=s.xp.ascontiguousarray(a["kernel"].T)),
     ["kernel", "[X, 4H]", "(5, 24)", "(24, 5)", "transposed"]),
    ("recurrent-kernel-transposed", ValueError,
     lambda a, s: dict(recurrent_kernel=s.xp.ascontiguousarray(a["recurrent_kernel"].T)),
     ["recurrent_kernel", "[H, 4H]", "(24, 6)", "transposed"]),
    ("peephole-flat", ValueError, lambda a, s: dict(peephole=a["peephole"].ravel()), ["peephole", "(3, 6)", "(18,)"]),
    ("mask-shape", ValueError, lambda a, s: dict(recurrent_dropout_mask=s.to_device(np.ones((4, 7), np.float32))),
     ["recurrent_dropout_mask", "(4, 6)", "(4, 7)"]),
    ("lengths-float", TypeError, lambda a, s: dict(lengths=s.to_device(np.ones(4, np.float32))),
     ["lengths", "integers", "float32"]),
    ("lengths-count", ValueError, lambda a, s: dict(lengths=s.to_device(np.ones(5, np.int32))),
     ["lengths", "[B]", "(4,)", "(5,)"]),
    ("lengths-range", ValueError, lambda a, s: dict(lengths=s.to_device(np.array([1, 4, 0, 2], np.int32))),
     ["lengths", "[0, T=3]", "lengths[1] = 4"]),
    ("activation", ValueError, lambda a, s: dict(recurrent_activation="relu"), ["recurrent_activation", "relu"]),
    ("training", TypeError, lambda a, s: dict(training="yes"), ["training", "bool", "str"]),
    ("numpy-h0", TypeError, lambda a, s: dict(h0=np.zeros((4, 6), np.float32)),
     ["h0", "numpy.ndarray", "x", "cupy.ndarray"]),
    ("numpy-lengths", TypeError, lambda a, s: dict(lengths=np.ones(4, np.int32)), ["lengths", "numpy.ndarray"]),
]


@pytest.mark.parametrize("case", BAD_FORWARD, ids=[c[0] for c in BAD_FORWARD])
def test_bad_forward_arguments_raise_clear_errors(case, side):
    _, exception, change, fragments = case
    args, _ = good_device_args(side)
    args.update(change(args, side))
    with pytest.raises(exception) as info:
        ops.lstm_forward(**args)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


BAD_BACKWARD = [
    ("dy-shape", ValueError, lambda i, s: dict(dy=s.to_device(np.zeros((3, 4, 7), np.float32))),
     ["dy", "[T, B, H]", "(3, 4, 6)", "(3, 4, 7)"]),
    ("dh-dtype", TypeError, lambda i, s: dict(dh=i["dh"].astype(np.float64)), ["dh", "float64", "x is float32"]),
    ("dc-numpy", TypeError, lambda i, s: dict(dc=np.zeros((4, 6), np.float32)), ["dc", "numpy.ndarray", "cache"]),
]


@pytest.mark.parametrize("case", BAD_BACKWARD, ids=[c[0] for c in BAD_BACKWARD])
def test_bad_backward_arguments_raise_clear_errors(case, side):
    _, exception, change, fragments = case
    args, incoming = good_device_args(side)
    out = ops.lstm_forward(**args)
    incoming.update(change(incoming, side))
    with pytest.raises(exception) as info:
        ops.lstm_backward(out.cache, **incoming)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


@pytest.mark.parametrize("name", ["kernel", "h0", "lengths", "recurrent_dropout_mask"])
def test_arrays_on_two_devices_are_refused(name, emulated):
    args, _ = good_device_args(emulated)
    args[name] = _on_device(args[name], 1)
    with pytest.raises(ValueError, match=rf"{name} is on GPU 1 but x is on GPU 0"):
        ops.lstm_forward(**args)


def test_gpu_engine_refuses_numpy_arrays_when_called_directly(emulated):
    # A direct call into the engine (past lstmfast.ops) raises instead of launching kernels on host memory.
    args, _ = small_case(np.float32)
    T, B, H = 3, 4, 6
    device = emulated.kwargs_to_device(args)
    outputs = dict(y=emulated.xp.empty((T, B, H), np.float32), h=emulated.xp.empty((B, H), np.float32),
                   c=emulated.xp.empty((B, H), np.float32), gates=None, cells=None)
    engine_args = dict(device, recurrent_activation=0, **outputs)
    cuda_ops.forward(**engine_args)
    with pytest.raises(TypeError, match=r"x must be a 3-D cupy.ndarray"):
        cuda_ops.forward(**dict(engine_args, x=args["x"]))
    with pytest.raises(TypeError, match=r"h0 must be a cupy.ndarray .*got ndarray"):
        cuda_ops.forward(**dict(engine_args, h0=args["h0"]))
    with pytest.raises(ValueError, match=r"y must be a C-contiguous float32 array of shape \(3, 4, 6\)"):
        cuda_ops.forward(**dict(engine_args, y=emulated.xp.empty((T, B, H + 1), np.float32)))
    with pytest.raises(ValueError, match=r"lengths is on GPU 1, the call runs on GPU 0"):
        cuda_ops.forward(**dict(engine_args, lengths=_on_device(np.full(B, T, np.int32), 1)))
    with pytest.raises(ValueError, match=r"recurrent_activation code must be 0 \(sigmoid\) or 1"):
        cuda_ops.forward(**dict(engine_args, recurrent_activation=2))


# ---------------------------------------------------------------------------------------------
# (b) Backend selection, and the errors when CuPy or a GPU is missing. No GPU, no CuPy needed.
# ---------------------------------------------------------------------------------------------

def test_default_backend_is_cpu():
    assert lstmfast.get_backend() == "cpu"
    assert type(ops.lstm_forward([[[1.0]]], [[1.0] * 4], [[1.0] * 4], None).y) is np.ndarray


@pytest.mark.parametrize("name", ["tpu", "CUDA", "", None, 1])
def test_set_backend_rejects_unknown_names(name):
    with pytest.raises(ValueError, match=r"backend must be one of 'cpu', 'cuda', got"):
        lstmfast.set_backend(name)
    assert lstmfast.get_backend() == "cpu"


def test_backend_keyword_rejects_unknown_names():
    args, _ = small_case(np.float32)
    with pytest.raises(ValueError, match=r"backend must be one of 'cpu', 'cuda', got 'gpu'"):
        ops.lstm_forward(**args, backend="gpu")


def test_set_backend_cuda_without_cupy_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    monkeypatch.setattr(lcuda, "_gpu_count", None)
    with pytest.raises(ImportError, match=r"the CUDA backend needs CuPy: pip install lstmfast\[gpu\]"):
        lstmfast.set_backend("cuda")
    assert lstmfast.get_backend() == "cpu"
    assert not lcuda.is_available()
    args, _ = small_case(np.float32)
    lists = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    with pytest.raises(ImportError, match=r"needs CuPy"):
        ops.lstm_forward(**lists, backend="cuda")


@pytest.mark.parametrize("fake", [dict(device_count=0), dict(count_error=RuntimeError("cudaErrorNoDevice"))],
                         ids=["zero-devices", "no-driver"])
def test_set_backend_cuda_without_a_gpu_says_so(fake, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", make_fake_cupy(**fake))
    monkeypatch.setattr(lcuda, "_gpu_count", None)
    with pytest.raises(RuntimeError, match=r"no CUDA GPU is visible"):
        lstmfast.set_backend("cuda")
    assert lstmfast.get_backend() == "cpu"
    assert not lcuda.is_available()


@pytest.mark.parametrize("cupy", [None, make_fake_cupy(device_count=0)], ids=["no-cupy", "no-gpu"])
def test_the_cli_backend_option_without_a_gpu_exits_2_with_the_reason(cupy, monkeypatch, capsys, tmp_path):
    from lstmfast import cli
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(lcuda, "_gpu_count", None)
    assert cli.main(["--backend", "cuda", "echo", "--steps", "5", "--metrics-json", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "--backend cuda" in err and ("needs CuPy" in err or "no CUDA GPU" in err), err
    assert "Traceback" not in err and lstmfast.get_backend() == "cpu"
    assert not (tmp_path / "m.json").exists()


def test_set_backend_routes_inputs_that_are_not_arrays(emulated):
    args, incoming = small_case(np.float64)
    lists = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    assert isinstance(ops.lstm_forward(**lists).y, np.ndarray)  # default: cpu
    lstmfast.set_backend("cuda")
    assert lstmfast.get_backend() == "cuda"
    out = ops.lstm_forward(**lists)
    assert isinstance(out.y, FakeDeviceArray)
    want = ops.lstm_forward(**args)
    assert_allclose(np.asarray(out.y), want.y, **TOLERANCES[np.float64])
    # NumPy arrays still run on the CPU: the arrays' kind comes before the global setting.
    assert type(ops.lstm_forward(**args).y) is np.ndarray
    lstmfast.set_backend("cpu")
    assert lstmfast.get_backend() == "cpu"


def test_arrays_choose_the_backend(emulated):
    args, incoming = small_case(np.float32)
    cpu = ops.lstm_forward(**args)
    assert type(cpu.y) is np.ndarray
    cuda = ops.lstm_forward(**emulated.kwargs_to_device(args))
    assert isinstance(cuda.y, FakeDeviceArray)
    # The cache says where the backward pass runs.
    assert type(ops.lstm_backward(cpu.cache, **incoming).dx) is np.ndarray
    assert isinstance(ops.lstm_backward(cuda.cache, **emulated.kwargs_to_device(incoming)).dx, FakeDeviceArray)


def test_mixing_numpy_and_cupy_arrays_is_an_error(emulated):
    args, incoming = small_case(np.float32)
    mixed = dict(args, recurrent_kernel=emulated.to_device(args["recurrent_kernel"]))
    with pytest.raises(TypeError, match=r"recurrent_kernel is a cupy.ndarray but x is a numpy.ndarray"):
        ops.lstm_forward(**mixed)
    out = ops.lstm_forward(**args)
    with pytest.raises(TypeError, match=r"dy is a cupy.ndarray but cache is a numpy.ndarray"):
        ops.lstm_backward(out.cache, **dict(incoming, dy=emulated.to_device(incoming["dy"])))


def test_explicit_backend_must_match_the_arrays(emulated):
    args, incoming = small_case(np.float32)
    with pytest.raises(TypeError, match=r"backend='cuda' needs CuPy arrays, but x is a numpy.ndarray.*cupy.asarray"):
        ops.lstm_forward(**args, backend="cuda")
    device_args = emulated.kwargs_to_device(args)
    with pytest.raises(TypeError, match=r"backend='cpu' needs NumPy arrays, but x is a cupy.ndarray.*\.get\(\)"):
        ops.lstm_forward(**device_args, backend="cpu")
    out = ops.lstm_forward(**device_args, backend="cuda")
    with pytest.raises(TypeError, match=r"backend='cpu' needs NumPy arrays, but cache is a cupy.ndarray"):
        ops.lstm_backward(out.cache, **emulated.kwargs_to_device(incoming), backend="cpu")
    cpu_out = ops.lstm_forward(**args, backend="cpu")
    with pytest.raises(TypeError, match=r"backend='cuda' needs CuPy arrays, but cache is a numpy.ndarray"):
        ops.lstm_backward(cpu_out.cache, **incoming, backend="cuda")


def test_importing_lstmfast_does_not_import_cupy():
    code = ("import sys, lstmfast, lstmfast.cuda, lstmfast.cuda.ops, lstmfast.cuda._kernels; "
            "lstmfast.ops.lstm_forward([[[1.0]]], [[1.0] * 4], [[1.0] * 4], None); "
            "print('cupy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# The benchmark script: parses, and exits with a clear message without a GPU.
# ---------------------------------------------------------------------------------------------

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "compare_cudnn.py")


def test_cudnn_benchmark_compiles():
    with open(BENCH, encoding="utf-8") as f:
        compile(f.read(), BENCH, "exec")


def test_cudnn_benchmark_cases_and_table():
    sys.path.insert(0, os.path.dirname(BENCH))
    try:
        import compare_cudnn
    finally:
        sys.path.pop(0)
    cases = compare_cudnn.cases()
    training = [c for c in cases if c.mode == "training" and c.layers == 1]
    assert {(c.H, c.B) for c in training} == {(h, b) for h in (512, 1024, 2048) for b in (16, 64)} | {
        (h, b) for h in (256, 512, 1024) for b in (128, 256, 512)}
    assert all(c.T == 25 and c.X == c.H for c in training)
    assert any(c.X == 65 and c.H == 256 and c.B == 50 and c.T == 50 and c.layers == 2 for c in cases)
    inference = {(c.H, c.B) for c in cases if c.mode == "inference"}
    assert inference == {(h, b) for h in (512, 1024) for b in (1, 4)}
    assert compare_cudnn.median([3.0, 1.0, 2.0]) == 2.0
    table = compare_cudnn.markdown_table("Test GPU", [(cases[0], 1.5, 3.0), (cases[1], 2.0, 3.0, 1e-6, 0.5)])
    assert "Test GPU" in table and "| 2.00" in table
    assert "| 0.500 | 6.00 |" in table  # the graph's time and cuDNN's / it
    assert "bfloat16" not in table
    table = compare_cudnn.markdown_table("Test GPU", [(cases[0], 1.5, 3.0, 1e-6, 0.5, 0.25, 1.0, (2e-3, 3e-3))])
    assert "| 0.250 | 1.000 | 4.00 | 12.00 | 2.0e-03, 3.0e-03 |" in table  # bf16 times and ratios


def test_cudnn_benchmark_without_gpu_exits_with_a_message():
    if real_cupy_with_gpu()[0] is not None:
        pytest.skip("a GPU is visible: the script would run the benchmark")
    result = subprocess.run([sys.executable, BENCH, "--repeats", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "GPU" in result.stderr and "Traceback" not in result.stderr


GPU_SCRIPTS = ["compare_cudnn.py", "gpu_fit.py", "gpu_phases.py"]


@pytest.mark.parametrize("script", GPU_SCRIPTS[1:])
def test_gpu_benchmarks_compile(script):
    path = os.path.join(os.path.dirname(BENCH), script)
    with open(path, encoding="utf-8") as f:
        compile(f.read(), path, "exec")


@pytest.mark.parametrize("script", GPU_SCRIPTS[1:])
def test_gpu_benchmarks_without_gpu_exit_with_a_message(script):
    if real_cupy_with_gpu()[0] is not None:
        pytest.skip("a GPU is visible: the script would run the benchmark")
    path = os.path.join(os.path.dirname(BENCH), script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.dirname(lstmfast.__path__[0]),
                                                                    os.environ.get("PYTHONPATH")) if p))
    result = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "GPU" in result.stderr and "Traceback" not in result.stderr
