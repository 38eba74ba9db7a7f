"""Shared fixtures."""
import pytest

import lstmfast

SIMD_LEVELS = ["portable", "avx2", "avx512"]


@pytest.fixture(params=SIMD_LEVELS)
def simd(request):
    """Run the test at each SIMD level this CPU supports (others skip with the reason), then
    restore the level that was in use."""
    before = lstmfast.build_info()["simd"]
    if SIMD_LEVELS.index(request.param) > SIMD_LEVELS.index(lstmfast.build_info()["simd_supported"]):
        pytest.skip(f"this CPU does not support the {request.param} kernels")
    lstmfast.set_simd_level(request.param)
    yield request.param
    lstmfast.set_simd_level(before)
