"""The engine every analysis shares: the runner and its batches, hooks, capture,
statistics, selection, preflight checks, inputs, samples, ranks and saving. It imports
``model``, ``results`` and ``errors``, never an analysis."""
