"""Evaluation: pure functions over arrays (numpy / torch in, floats out).

Nothing in the codec core imports this package.
"""
