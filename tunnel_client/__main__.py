"""`python -m tunnel_client` is `tunnelc`."""

from .cli import main

main()
