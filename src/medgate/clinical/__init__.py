"""Decision support for primary-care doctors: versioned calculators, rules and a learned model.

Each calculator is a pure function over validated inputs that returns its result together with
``CalculatorInfo`` (name, version, SHA-256 of its coefficients), so that every answer can be traced
to the exact equation that produced it. The HTTP layer lives in ``medgate.api.routes_cds``.
"""

from medgate.clinical.common import CalculatorInfo

__all__ = ["CalculatorInfo"]
