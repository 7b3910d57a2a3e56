"""Training, evaluation, export of bundles and model cards; ``make models`` rebuilds every demo
bundle from scratch.
"""
