"""Hybrid fine-tuning: a few epochs of surrogate-gradient training of a converted SNN.

Conversion gives a good starting point; backpropagation through time at the deployed ``T`` then
corrects the errors that the rate approximation makes at small ``T`` (Rathi et al., ICLR 2020).
The IF neurons' spike functions carry their surrogate derivative, so this is ordinary training of
the :class:`~spikec.conversion.rate.RateSNN` with :func:`spikec.training.train`. Weights and
biases are trained; thresholds (buffers) and the initial membranes stay as converted.
"""
from __future__ import annotations

from torch import nn


def finetune(
    snn: nn.Module,
    train_data,
    epochs: int = 2,
    lr: float = 1e-4,
    batch_size: int = 64,
    timesteps: int | None = None,
    test_data=None,
    seed: int = 0,
    progress: bool = False,
    **train_options,
) -> list:
    """Fine-tune ``snn`` in place at ``timesteps`` (default its current ``T``); returns the per-epoch history.

    ``train_data``/``test_data`` take the forms :func:`spikec.training.train` accepts, and
    ``train_options`` (``schedule``, ``on_epoch``, ``optimizer``, ...) go to it unchanged. The
    network is left in eval mode.
    """
    from spikec.training import train

    if timesteps is not None:
        snn.timesteps = int(timesteps)
    try:
        return train(snn, train_data, epochs=epochs, lr=lr, batch_size=batch_size, test_data=test_data,
                     seed=seed, progress=progress, **train_options)
    finally:
        snn.eval()
