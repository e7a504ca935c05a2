"""Who runs the pipeline: a scenario's notebook, the launcher around it, and the commands that
run many (``run all``, ``--fixture-sizes``) or none (``workbench drive``).

``scenario`` (``Run``, in the notebook kernel: one method per step), ``launcher`` (outside the
kernel: input, preflight, papermill, the notebooks), ``kernel``, ``suite``, ``sweep``, ``adhoc``.
"""
