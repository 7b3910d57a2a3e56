"""Helpers of the gateway fault injections of issue #8: the serving suite's bundle and phantom
helpers, and the shared ``GatewayProcess`` (tests/support/gateway_process.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.support.gateway_process import GatewayProcess, wait_for

SERVING_HELPERS = Path(__file__).parent.parent / "serving" / "helpers.py"

__all__ = ["GatewayProcess", "serving_helpers", "wait_for"]


def serving_helpers() -> ModuleType:
    """The serving suite's helpers (tiny real ONNX bundles, phantom studies), loaded from their
    file under a name of their own so that no other suite's ``helpers`` module is shadowed."""
    name = "medgate_serving_test_helpers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SERVING_HELPERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
