"""`python -m chain_app`: the `chain` command."""

from .cli import main

main()
