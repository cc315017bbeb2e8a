"""tunnelkit wire protocol: sans-IO framing, messages and stream multiplexing."""

from typing import Final

__version__: Final = "0.1.0"
PROTOCOL_VERSION: Final = 4
