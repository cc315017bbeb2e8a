"""What a peer-chosen name may be, and how any peer-supplied text is shown in a log line.

Names (client ids, users, proxy names) are checked at login and on every proxy request, with
an error that says what is wrong, so a log line never carries a newline or a control character
from them. Everything else a peer sends that reaches a log line goes through `peer_text`,
which escapes what is not printable and cuts the length.
"""

from __future__ import annotations

import re
from typing import Final

MAX_NAME_CHARS: Final = 128  # client ids, users and proxy names
# Letters, digits and . _ - : @ ; the user prefix ("user.name") keeps the dot meaningful.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.:@-]+")
MAX_LOGGED_CHARS: Final = 200  # longer peer text is cut in log lines, with a marker


def name_problem(what: str, value: str, *, allow_empty: bool = False) -> str | None:
    """Why `value` is not a valid name, as one line for the peer; None if it is fine."""
    if not value:
        return None if allow_empty else f"{what} must not be empty"
    if len(value) > MAX_NAME_CHARS:
        return f"{what} is longer than {MAX_NAME_CHARS} characters"
    if _NAME_RE.fullmatch(value) is None:
        return (
            f"{what} {peer_text(value, 64)} may only use letters, digits and . _ - : @ "
            "(no spaces, newlines or control characters)"
        )
    return None


def peer_text(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """`value` as a safe log fragment: printable ASCII kept, everything else escaped, cut.

    Plain names come out unchanged, so they stay greppable.
    """
    original = value if isinstance(value, str) else str(value)
    text = original[:limit]
    if not (text.isascii() and text.isprintable()):
        text = text.encode("unicode_escape").decode("ascii")
    if len(original) > limit:
        text += f"...(+{len(original) - limit} chars)"
    return text
