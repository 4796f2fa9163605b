"""``python -m optinspect``."""

from .cli import main

main()
