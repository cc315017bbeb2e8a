"""`python -m tunnel_server` is `tunneld`."""

from .cli import main

main()
