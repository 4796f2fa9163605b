"""The analyses, one module each, every one hook groups plus a reducer around the engine's
runner: ``trace`` (with ``sparsity``, and ``dryrun`` on the meta device), ``lens``,
``attention``, ``compare``, ``outliers``, ``calibrate``; ``params`` and ``tree`` count from
a config."""
