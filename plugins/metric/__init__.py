"""Evaluation metrics (slot ``metric``): signal distances, perceptual/intelligibility scores, ASR, token statistics.

The contract (:class:`codecfw.core.metric.Metric`) lives in core; each module here registers its kinds through
``register_metrics`` and its own entry point, exactly as a third-party metric package would.
"""
