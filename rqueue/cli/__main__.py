"""``python -m rqueue.cli`` runs the command line, as ``python -m rqueue`` does."""

from rqueue.cli import main

main()
