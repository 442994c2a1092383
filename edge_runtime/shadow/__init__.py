"""Evaluation in the field: shadow scoring against the dense variant, drift per dimension, capture.

`config` (ShadowConfig), `checks` (the output checks the gate shares), `drift` (rolling scores
and floors), `capture` (regression cases), `scorer` (ShadowScorer, owned by the Runtime).
"""
