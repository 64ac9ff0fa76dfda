"""The DVC stage entry points, one ``python -m stages.<name>`` per stage family.

Before a stage module imports torch, this package re-executes its process with the CPU
kernels pinned (pipeline/kernels.py), unless ``runtime.cpu_kernels`` is ``native``.
"""

from pipeline.kernels import pin_this_stage

pin_this_stage()
