"""Step 5, record and report: one report path from what a run measured to everything written.

``reporting`` (the standard tables, figures and record context, and the reporters), ``record``
(``record.json``), ``view`` (what a reader sees first), ``plots``, ``exports``, ``notebook``
(what cells display), and the machine a run was measured on (``machine``, ``calibration``).
"""
