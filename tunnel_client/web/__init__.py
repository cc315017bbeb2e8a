"""The client's web surfaces: the admin API and shared access control."""
