"""The workbench's stand-in certctl server: an embedded default target (not certctl itself).

Run it with ``python -m workbench.target.standin``; ``workbench.target.embedded`` starts and stops
it.
"""

from workbench.target.standin.core import RateLimit, StandinConfig, config_from_env
from workbench.target.standin.server import STANDIN_VERSION, build_app, schema_sql

__all__ = ["STANDIN_VERSION", "RateLimit", "StandinConfig", "build_app", "config_from_env",
           "schema_sql"]
