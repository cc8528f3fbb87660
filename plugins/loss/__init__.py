"""Reconstruction losses (slot ``loss``): ``forward(y_hat, y) -> scalar`` on ``Tensor[B x 1 x N]`` waveforms; each
config carries the ``weight`` the training loop multiplies it by."""
