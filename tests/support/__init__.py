"""Helpers shared by the tests: fixtures stay in conftest.py, everything else lives here.

The package is registered for pytest's assertion rewriting before any of its modules is
imported, so an ``assert`` in a helper (or in a test function collected from here) reports the
values it compared, as one in a test module does. This file itself is already imported when it
registers and holds no assertion: PYTEST_DONT_REWRITE tells pytest so (no warning).
"""

import pytest

pytest.register_assert_rewrite("tests.support")
