"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_blas_thread():
    """One BLAS thread for the module: small BLAS calls on a shared 2-core machine are far
    faster single-threaded. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
