"""Discriminators for adversarial decoders (slot ``discriminator``).

Contract: ``forward(y: Tensor[B x 1 x N]) -> list[tuple[Tensor, list[Tensor]]]``, one ``(logits, feature maps)`` per
sub-discriminator; the training loop applies the adversarial (LSGAN) and feature-matching losses.
"""
