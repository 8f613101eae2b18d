"""Operator and developer tooling beside the Lambda code: never deployed.

``chalicelib`` is what the functions in ``app.py`` run; ``ops`` imports it, never the reverse.
"""
