"""`python -m glrast ...`: the `glrast` command."""

from .cli import main

raise SystemExit(main())
