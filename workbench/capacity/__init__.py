"""Capacity: the highest load a target sustains, each step a drive through the whole pipeline.

``search`` (the search, pure), ``runner`` (each step a driver run, judged, and the result
file), ``records`` (a search kept like a baseline).
"""
