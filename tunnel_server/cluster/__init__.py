"""Several tunneld nodes sharing one name space through Redis (docs/cluster.md)."""
