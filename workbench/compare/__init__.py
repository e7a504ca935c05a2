"""Step 6, compare: runs against runs, baselines, interleaved builds and certctl's history.

``runs`` (two runs or sets, statistically), ``baseline`` (committed records, README's table),
``ab`` and ``paired`` (interleaved A/B), ``history`` (a range of commits, ``--bisect``),
``k6import`` (certctl's k6 figures as a run).
"""
