"""Step 4, analyse: a run's requests into tables, pure (no I/O but loading, no state).

``analysis`` (DataFrames in and out), ``stats`` (numpy in and out), ``hdr`` (the histograms
the driver and the records share) and ``thresholds`` (k6's grammar, without pandas).
"""
