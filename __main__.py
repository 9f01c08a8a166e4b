"""`python -m tracklink` is the same CLI; torchrun needs this entry point."""

from tracklink.cli import main

raise SystemExit(main())
