"""What tunneld and tunnelc share that is not the wire protocol.

The config loader and the schema both apps share, logging set-up, certificate fingerprints,
the event-loop runner and the web guards. It may import `protocol`; `protocol` never imports
it, and it imports neither application (tests/unit/test_layering.py).
"""
