"""/metrics for load-balanced groups: members per group and state, read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from .view import GroupInfo


class GroupCollector:
    """`tunnelkit_group_members{group, type, state}`: online, left healthy, left unhealthy."""

    def __init__(self, groups: Callable[[], list[GroupInfo]]) -> None:
        self._groups = groups

    def collect(self) -> Iterator[Metric]:
        members = GaugeMetricFamily(
            "tunnelkit_group_members",
            "Members of each load-balanced group: online, or left (healthy or unhealthy).",
            labels=["group", "type", "state"],
        )
        for group in self._groups():
            counts = {"online": 0, "left_healthy": 0, "left_unhealthy": 0}
            for member in group.members:
                if member.state == "online":
                    counts["online"] += 1
                else:
                    counts["left_healthy" if member.healthy else "left_unhealthy"] += 1
            label = f"{group.user}.{group.name}" if group.user else group.name
            for state, count in counts.items():
                members.add_metric([label, group.type, state], count)
        yield members
