"""Clinical knowledge in one place, as pure functions with their sources next to them.

The decision-support calculators (China-PAR, NEWS2, qSOFA), the hypertension and diabetes
follow-up rules, the urgent-reading rules, the imaging guidance (Fleischner, cardiothoracic ratio)
and the transparent triage rule. docs/clinical.md lists every rule with its source and edition.
Each calculator is a pure function over validated inputs that returns its result together with
``CalculatorInfo`` (name, version, SHA-256 of its coefficients), so that every answer can be traced
to the exact equation that produced it. The HTTP layer lives in ``medgate.api.routes_cds``.
"""

from medgate.clinical.common import CalculatorInfo

__all__ = ["CalculatorInfo"]
