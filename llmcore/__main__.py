"""``python -m llmcore`` runs the command-line interface."""

from llmcore.cli import main

raise SystemExit(main())
