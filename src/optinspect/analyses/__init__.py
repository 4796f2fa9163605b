"""The analyses, one module each, every one hook groups plus a reducer around the engine's
runner: ``trace`` (with ``sparsity``, and ``dryrun`` on the meta device), ``lens``,
``attention``, ``compare``, ``outliers``, ``calibrate``; ``params`` and ``tree`` count from
a config; ``report`` runs several of them in one forward pass. A job (``job``) names one
of them by its command.

``COMPUTE`` says where each command's compute function lives; it is imported only when a
job runs, so this package imports nothing (no torch) until then.
"""

from __future__ import annotations

__all__ = ["COMPUTE"]

#: Every command a job may run (here or in a server), and its compute function.
COMPUTE = {
    "trace": "optinspect.analyses.trace:compute",
    "lens": "optinspect.analyses.lens:compute",
    "attention": "optinspect.analyses.attention:compute",
    "compare": "optinspect.analyses.compare:compute",
    "outliers": "optinspect.analyses.outliers:compute",
    "calibrate": "optinspect.analyses.calibrate:compute",
    "params": "optinspect.analyses.params:compute",
    "report": "optinspect.analyses.report:compute",
}
