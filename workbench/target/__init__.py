"""Step 1, the target: which server takes the load, started here or found, and fit to be loaded.

``embedded`` (the embedded PostgreSQL, the stand-in, every server the workbench started),
``certctl`` (builds and runs certctl), ``preflight`` (which target, is it fit), ``tlsca`` and
``ports``; the stand-in (``standin/``) and the connector tier's daemons (``connectors/``) are
the targets the workbench brings itself.
"""
