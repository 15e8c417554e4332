"""The test suite's own machinery: `make test`'s worker grouping (tests/conftest.py)."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def shared():
    return object()


def test_module_fixture_tests_share_a_worker(shared, request):
    """Under ``make test`` (``-n auto --dist loadgroup``) a test that uses a module-scoped fixture
    is tagged with its module's group, so one worker builds that fixture once. pytest 9 with
    xdist 3.8 dropped the tag silently (trained models were built twice); this fails instead."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or request.config.getoption("dist", "no") != "no" \
            or not request.config.getoption("loadgroup", False):
        pytest.skip("runs under pytest -n N --dist loadgroup (make test)")
    assert request.node.nodeid.endswith("@test_suite"), request.node.nodeid
