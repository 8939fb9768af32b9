"""``python -m rqueue`` runs the command line (how the demo starts its workers)."""

from .cli import main

main()
