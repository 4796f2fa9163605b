"""The records the analyses return: plain frozen dataclasses, no torch, so the renderers,
the server's wire and a torch-free client can hold them. The bottom layer, beside
``errors``: nothing here imports another part of optinspect.

One submodule per analysis (``trace``, ``sparsity``, ``lens``, ``attention``,
``compare``, ``outliers``, ``calibration``, ``params``, ``tree``); the analysis modules
re-export their records, so ``from optinspect.analyses.lens import LensResult`` works
too. ``records`` holds what every result shares (model description, tokens, module
calls, statistics, the schema version); ``units`` counts and sizes as text; ``files``
the atomic write every writer uses. Nothing here imports torch or transformers (but
the calibration record's file builders, when called).
"""
