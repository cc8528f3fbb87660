"""Converters from other formats of pretrained models (the reference's checkpoints, other runtimes) to the formats
codecfw reads."""
