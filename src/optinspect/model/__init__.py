"""What a model is and where it runs: the load settings, specs and configs, loading,
placement, the family adapters (OPT, the Llama layout, GPT-2), the family table and the
module names. It imports ``results`` and ``errors``
only: nothing of the engine or above."""
