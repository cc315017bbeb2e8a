"""The request inspector: capture HTTP exchanges of http proxies, browse them, replay them."""
