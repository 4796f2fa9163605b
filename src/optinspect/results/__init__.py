"""The records the analyses return: plain frozen dataclasses, no torch, so the renderers
and a torch-free client can hold them.

One submodule per analysis (``trace``, ``sparsity``, ``lens``, ``attention``,
``compare``, ``outliers``, ``calibration``); the analysis modules re-export their
records, so ``from optinspect.lens import LensResult`` keeps working. The records
every result shares (model description, tokens, module calls, statistics) are in
``optinspect.engine.records``; ``params``'s records live in ``optinspect.params``.
Nothing here imports torch, transformers, or an optinspect module that does.
"""
