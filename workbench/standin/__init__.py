"""The workbench's stand-in certctl server: an embedded default target (not certctl itself).

Run it with ``python -m workbench.standin``; ``workbench.target`` starts and stops it.
"""

from workbench.standin.core import RateLimit, StandinConfig, config_from_env
from workbench.standin.server import STANDIN_VERSION, build_app, schema_sql

__all__ = ["STANDIN_VERSION", "RateLimit", "StandinConfig", "build_app", "config_from_env",
           "schema_sql"]
