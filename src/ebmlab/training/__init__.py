"""Training: the loop (:func:`fit`), the config-driven run (:func:`train`), checkpoints, loading.

Layer: imports objectives, partition, samplers, energy, data, diagnostics, metrics and
distributed; never jobs or cli (no printing, no pictures, no file formats beyond the run's own).
"""
