"""The live terminal panel of `tunnelc http|tcp|udp` (like ngrok's), drawn with `rich`.

Shown when stdout is a terminal and `--log` is not given. It redraws a few times a second from
what the client already knows: the session state (online, or reconnecting with the attempt
count and the time of the next try), each proxy's public URL and state, and for http proxies
with the inspector the request count, p50/p90 latency and the last requests. While the panel
runs, log lines go to a bounded list shown at its foot (and to --log-file when given) instead
of the terminal, so they do not tear the display.

Bounds: `MAX_LOG_LINES` log lines kept, `LAST_REQUESTS` requests shown, latency percentiles
over the store's exchanges (at most `inspect.maxRequests`).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from typing import TYPE_CHECKING, Final

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from .client import TunnelClient

REFRESH_PER_SECOND: Final = 4
MAX_LOG_LINES: Final = 6
LAST_REQUESTS: Final = 10


class PanelLogHandler(logging.Handler):
    """Keeps the last `MAX_LOG_LINES` log messages for the panel's foot."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=MAX_LOG_LINES)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(fraction * 100) - 1]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _forwarding(row: dict[str, object]) -> Text:
    """One proxy's URLs, one per line (an https:// URL that arrives later gets its own line,
    so a narrow terminal never breaks a URL in two), the local address, and its state or note:
    a running http proxy's note says its certificate is still pending."""
    urls = [str(url) for url in row["public"]] or ["-"]  # type: ignore[attr-defined]
    line = Text(f"{urls[0]} -> {row['local']}")
    for url in urls[1:]:
        line.append(f"\n{url}")
    if row["state"] != "running":
        line.append(f"\n[{row['state']}] {row['error'] or ''}", style="yellow")
    elif row["error"]:
        line.append(f"\n({row['error']})", style="yellow")
    return line


def render(client: TunnelClient, logs: PanelLogHandler | None, now: float) -> Group:
    """The panel as rich renderables (pure over the client's state; tests call it too)."""
    cfg = client.config
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    state = client.connection_state
    if state == "online":
        shown = Text("online", style="bold green")
    elif state == "reconnecting":
        wait = max(0.0, (client.next_try_at or now) - now)
        shown = Text(
            f"reconnecting (attempt {client.attempt}, next try in {wait:.0f}s)",
            style="bold yellow",
        )
        if client.last_error:
            shown.append(f"  {client.last_error}", style="yellow")
    else:
        shown = Text(state, style="bold")
    head.add_row("Session", shown)
    head.add_row("Server", client.server_text)
    if client.surfaces.inspector_port is not None:
        head.add_row("Inspector", f"http://{cfg.inspect.addr}:{client.surfaces.inspector_port}/")
    for row in client.status():
        head.add_row(f"Forwarding {row['name']}", _forwarding(row))

    parts: list[Table | Text] = [head]
    store = client.surfaces.store
    if store is not None:
        exchanges = store.list()
        durations = [e.duration_ms for e in exchanges if e.duration_ms is not None]
        stats = Table(title="Requests", title_justify="left", box=None, padding=(0, 2))
        for column in ("total", "p50", "p90"):
            stats.add_column(column)
        stats.add_row(
            str(len(exchanges)),
            _ms(_percentile(durations, 0.5)),
            _ms(_percentile(durations, 0.9)),
        )
        parts.append(stats)
        recent = Table(box=None, padding=(0, 2), show_header=False)
        for column in ("time", "method", "path", "status", "duration"):
            recent.add_column(column)
        for exchange in exchanges[:LAST_REQUESTS]:
            status = (
                Text(f"{exchange.status} {exchange.reason}")
                if exchange.status
                else Text(exchange.error or "...", style="red")
            )
            if exchange.status and exchange.status >= 500:
                status.stylize("red")
            recent.add_row(
                time.strftime("%H:%M:%S", time.localtime(exchange.started_at)),
                exchange.method,
                exchange.path[:60],
                status,
                _ms(exchange.duration_ms),
            )
        parts.append(recent)
    if logs is not None and logs.lines:
        parts.append(Text("\n".join(logs.lines), style="dim"))
    return Group(*parts)


async def run_panel(client: TunnelClient, console: Console) -> None:
    """Redraw the panel until cancelled; log lines go to the panel meanwhile."""
    handler = PanelLogHandler()
    root = logging.getLogger()
    hidden = [
        h
        for h in root.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    for h in hidden:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        with Live(
            render(client, handler, time.time()),
            console=console,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=False,
        ) as live:
            while True:
                await asyncio.sleep(1 / REFRESH_PER_SECOND)
                live.update(render(client, handler, time.time()))
    finally:
        root.removeHandler(handler)
        for h in hidden:
            root.addHandler(h)
