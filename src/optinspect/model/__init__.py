"""What a model is and where it runs: the load settings, specs and configs, loading,
placement, the OPT family and its module names. It imports ``results`` and ``errors``
only: nothing of the engine or above."""
