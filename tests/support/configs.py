"""Config files for the processes a test starts: the settings as TOML, secrets included.

``medgate config show`` prints settings with every secret redacted; a test that starts
``medgate serve`` in a subprocess needs the real audit key and tokens in the file it passes.
"""

from __future__ import annotations

from medgate.core.config import Settings
from medgate.core.redaction import data_to_toml


def settings_to_toml(settings: Settings) -> str:
    """``settings`` as TOML that ``load_settings`` reads back to equal settings."""
    return data_to_toml(settings.model_dump(mode="json"))
