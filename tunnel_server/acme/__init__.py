"""ACME (RFC 8555) certificates for the HTTPS edge, through the `acme` and `josepy` packages.

- `challenges.py`: the answers the CA checks: HTTP-01 on the HTTP vhost, TLS-ALPN-01
  (RFC 8737) on the HTTPS edge;
- `account.py`: the account key and one order, run in a worker thread (`acme` is blocking);
- `manager.py`: on-demand issuance with a name policy, a rate limit, retries with backoff,
  renewal at two thirds of a certificate's life, and the state the dashboard and /metrics show.
"""
