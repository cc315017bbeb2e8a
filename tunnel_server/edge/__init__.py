"""The HTTPS edge: TLS termination on vhostHTTPSPort, certificates, and (later) ACME."""
