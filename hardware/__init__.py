"""spikec.hardware: the twin-column ReRAM processing element (ASTERS-style), its energy and reports.

Entry points: :func:`spikec.hardware.config.preset` / ``load_config`` (the frozen
``HardwareConfig``), :class:`spikec.hardware.evaluate.PEModel` (a TTFS SNN mapped onto the PE;
run chips, calibrate MFTA), :func:`spikec.hardware.energy.layer_energy` (the pure per-layer
accounting), :func:`spikec.hardware.study.energy_study` and
:func:`spikec.hardware.report.write_report` (what ``spikec energy`` does). The model is written
out in ``docs/hardware-model.md``.
"""
