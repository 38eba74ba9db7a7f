"""Shared fixtures."""
import pytest

import lstmfast

SIMD_LEVELS = ["portable", "avx2", "avx512"]  # the hardware levels, in increasing order
# avx512emu runs the AVX-512 level's code shapes with AVX2 instructions: where the CPU has AVX2
# but no AVX-512 it is the only way those shapes (16 float lanes, 6-row tiles) get tested.
ALL_LEVELS = SIMD_LEVELS + ["avx512emu"]


def level_runs_here(level: str) -> bool:
    best = SIMD_LEVELS.index(lstmfast.build_info()["simd_supported"])
    if level == "avx512emu":
        return best >= SIMD_LEVELS.index("avx2")
    return SIMD_LEVELS.index(level) <= best


@pytest.fixture(params=ALL_LEVELS)
def simd(request):
    """Run the test at each SIMD level this CPU supports (others skip with the reason), then
    restore the level that was in use."""
    before = lstmfast.build_info()["simd"]
    if not level_runs_here(request.param):
        pytest.skip(f"this CPU does not support the {request.param} kernels")
    lstmfast.set_simd_level(request.param)
    yield request.param
    lstmfast.set_simd_level(before)
