"""`python -m app.cli`: the same as the `allinone` command."""

from app.cli import main

main()
