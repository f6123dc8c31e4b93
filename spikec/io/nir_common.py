"""What spikec's NIR export and import agree on: the time step, the threshold convention, the errors.

NIR defines neurons in continuous time; spikec steps them. The conventions below are the ones
norse and snntorch use when they run a NIR graph, so one file means the same thing in all three
(see ``docs/nir.md`` for the equations):

- ``LIF``: one Euler step of length ``dt``, ``v <- (1 - dt/tau) v + (dt/tau) (v_leak + r I)``.
- ``IF``: one step adds the input, ``v <- v + r I`` (``dt`` does not enter).
- A neuron fires when ``v > v_threshold`` (NIR, norse, snntorch) where spikec fires at
  ``v >= threshold``. In float32 the two agree exactly when the NIR threshold is the float32
  number just below spikec's, so export writes that number and import reads it back.
"""
from __future__ import annotations

import numpy as np

from spikec.errors import SpikecError

# snntorch's NIR import steps every LIF with dt = 1e-4 and has no option to change it, so a graph
# meant for snntorch must use this step; norse takes it as ``from_nir(graph, dt=1e-4)``.
DEFAULT_DT = 1e-4

# ``if_as="LIF"`` writes an IF neuron as a LIF whose time constant is this many steps: the leak
# per step is 2**-26, which rounds away in float32 (1 - 2**-26 == 1.0), and the power of two
# keeps the threshold scaling exact.
IF_AS_LIF_STEPS = 2.0 ** 26

SUPPORTED_EXPORT = (
    "nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.Flatten (or flatten(x, 1)), nn.Identity, nn.Dropout, spikec.IF, spikec.LIF"
)
SUPPORTED_IMPORT = "Input, Output, Affine, Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, IF, LIF"


class NIRExportError(SpikecError):
    """A spikec network holds something NIR (or this exporter) cannot express; the message names the layer."""


class NIRImportError(SpikecError):
    """A NIR graph or file holds something spikec cannot run; the message names the node or file."""


def strict_threshold(threshold: np.ndarray) -> np.ndarray:
    """spikec's ``v >= thr`` as NIR's ``v > t``: the largest float32 below ``thr``."""
    thr = np.asarray(threshold, dtype=np.float32)
    return np.nextafter(thr, np.float32(-np.inf))


def inclusive_threshold(threshold: np.ndarray) -> np.ndarray:
    """NIR's ``v > t`` as spikec's ``v >= thr``: the smallest float32 above ``t``."""
    thr = np.asarray(threshold, dtype=np.float32)
    return np.nextafter(thr, np.float32(np.inf))
