"""What a model is and where it runs: specs and configs, loading, placement, the OPT
family and its module names."""
