"""Evaluation: result schemas, fairness metrics, graph cost, Pareto tools, plots.

Import from the modules themselves (``evaluation.report``, ``evaluation.fairness``,
``evaluation.pareto`` ...): this package imports nothing, so ``import evaluation`` stays
cheap. Imports flow one way: evaluation modules import only ``tasks`` and each other.
"""
