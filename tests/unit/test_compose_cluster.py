"""docker-compose's cluster profile: Redis plus three tunneld nodes on one cluster config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunnel_server.config import parse_server_config

ROOT = Path(__file__).resolve().parents[2]
NODES = ("node-a", "node-b", "node-c")


def compose_config(*args: str) -> dict[str, Any]:
    """`docker-compose -f docker-compose.yml [args] config`, parsed; skips without compose."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        [compose, "-f", "docker-compose.yml", *args, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


def test_compose_cluster_profile_runs_redis_and_three_nodes() -> None:
    """With and without the profile the file is valid; redis and the three nodes belong to
    the cluster profile only, each node with its own name and host ports."""
    plain = compose_config()["services"]
    for name in ("tunneld", "tunnelc", "web"):
        assert "profiles" not in plain[name], name
    services = compose_config("--profile", "cluster")["services"]
    assert services["redis"]["profiles"] == ["cluster"]
    published: list[object] = []
    for name in NODES:
        node = services[name]
        assert node["profiles"] == ["cluster"]
        assert node["environment"]["TUNNELD_NODE_NAME"] == name
        assert "redis" in node["depends_on"]
        assert any(
            "frps-cluster.toml.example:/etc/tunnelkit/frps.toml" in v for v in node["volumes"]
        )
        published += [p["published"] if isinstance(p, dict) else p for p in node["ports"]]
    assert len(published) == len(set(published)) == 9  # no two nodes share a host port


def test_compose_cluster_config_names_each_node_and_the_redis_service() -> None:
    """The nodes' config loads, points at the compose file's redis service and takes the
    node name from TUNNELD_NODE_NAME."""
    path = ROOT / "frps-cluster.toml.example"
    text = path.read_text(encoding="utf-8")
    for name in NODES:
        env = {"TUNNELD_NODE_NAME": name, "TUNNELD_CLUSTER_SECRET": "s3cret"}
        cfg = parse_server_config(text, str(path), env=env)
        assert cfg.cluster_redis_url == "redis://redis:6379/0"
        assert cfg.cluster_node_name == name
        assert cfg.cluster_internal_addr == name  # the other nodes reach it by service name
        assert cfg.cluster_secret is not None and cfg.cluster_secret.reveal() == "s3cret"
        assert cfg.cluster_lease_s == 15
