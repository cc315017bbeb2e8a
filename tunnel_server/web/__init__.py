"""The server's web surface: dashboard page, JSON API and Prometheus metrics (aiohttp)."""
