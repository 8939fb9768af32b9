"""``python -m rqueue`` runs the command line (how the demo starts its workers)."""

from rqueue.cli import main

main()
