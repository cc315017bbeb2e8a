"""The inspector's API for mock and catch rules: list, create, toggle, delete.

GET    /api/mocks            {"rules": [...], "proxies": ["web", ...]}
POST   /api/mocks            a rule (see `mock.parse_rule`) -> the rule, 201
PATCH  /api/mocks/{id}       {"enabled": true|false} -> the rule
DELETE /api/mocks/{id}       -> {"deleted": id}
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from tunnel_client.inspect.mock import MockRule, MockRules, parse_rule


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json(request: web.Request) -> object:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError:
        return None


def mock_routes(rules: MockRules, http_proxies: Callable[[], frozenset[str]]) -> list[web.RouteDef]:
    """Routes over `rules`; `http_proxies()` names the proxies a rule may target."""

    def lookup(request: web.Request) -> MockRule:
        raw = request.match_info["id"]
        rule = rules.rules.get(int(raw)) if raw.isdigit() else None
        if rule is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no rule {raw}"}), content_type="application/json"
            )
        return rule

    async def list_rules(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "rules": [rule.as_json() for rule in rules.rules.values()],
                "proxies": sorted(http_proxies()),
            }
        )

    async def create(request: web.Request) -> web.Response:
        try:
            rule = parse_rule(rules.new_id(), await _json(request), http_proxies())
            rules.add(rule)
        except ValueError as exc:
            return _error(str(exc))
        return web.json_response(rule.as_json(), status=201)

    async def toggle(request: web.Request) -> web.Response:
        rule = lookup(request)
        body = await _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
            return _error('send {"enabled": true} or {"enabled": false}')
        rules.set_enabled(rule, body["enabled"])
        return web.json_response(rule.as_json())

    async def delete(request: web.Request) -> web.Response:
        rule = lookup(request)
        rules.remove(rule.id)
        return web.json_response({"deleted": rule.id})

    return [
        web.get("/api/mocks", list_rules),
        web.post("/api/mocks", create),
        web.post("/api/mocks/{id}", toggle),
        web.post("/api/mocks/{id}/delete", delete),
    ]
