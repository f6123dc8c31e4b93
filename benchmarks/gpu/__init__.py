"""The GPU suite's parts, one module each; ``benchmarks/gpu_suite.py`` runs them under one time budget.

Every part takes a :class:`~gpu.config.SuiteConfig` and a :class:`~gpu.budget.Budget` and returns
plain data (a dict) for ``results.json``; ``--smoke`` runs the same functions on CPU at toy sizes.
"""
