"""The workbench's stand-in certctl server: an embedded default target (not certctl itself).

Run it with ``python -m workbench.standin``; ``workbench.target`` starts and stops it.
"""

from workbench.standin.server import STANDIN_VERSION, StandinConfig, build_app, schema_sql

__all__ = ["STANDIN_VERSION", "StandinConfig", "build_app", "schema_sql"]
