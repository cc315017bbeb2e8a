"""Users of one tunneld: the store, the running server's view of it, quotas, and the CLI."""
