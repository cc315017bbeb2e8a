"""frp's config templates: the subset of Go's text/template that frp's docs and users write.

frp renders every config file (TOML, YAML, JSON or INI) as a Go template before parsing it,
with `.Envs` holding the environment and two helper functions. tunnelkit renders the same
subset here, on the raw text, with the same results:

- `{{ .Envs.NAME }}`: the variable's value; an unset variable renders as "" (frp's `.Envs`
  is a `map[string]string`, whose missing keys give the zero value), with a note;
- `{{ range $i, $v := parseNumberRange "1000-1005,2000" }} ... {{ $v }} ... {{ end }}`;
- `{{ range $_, $v := parseNumberRangePair "6000-6006" "7000-7006" }} ... {{ $v.First }}
  ... {{ $v.Second }} ... {{ end }}`;
- the trim markers `{{-` and `-}}`, and comments `{{/* ... */}}`.

Any other action is a `ConfigError` that names it as "not supported yet". The numbers of a
range are bounded (`MAX_RANGE_ITEMS`) so a typo cannot expand into millions of proxies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from protocol.errors import ConfigError

MAX_RANGE_ITEMS: Final = 10_000  # numbers one parseNumberRange(Pair) may produce
MAX_RENDERED_CHARS: Final = 16 * 1024 * 1024  # a rendered config larger than this is refused
_ACTION: Final = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_ENV: Final = re.compile(r"\.Envs\.([A-Za-z_][A-Za-z0-9_]*)")
_RANGE: Final = re.compile(
    r"range\s+(?:(\$\w*)\s*,\s*)?(\$\w+)\s*:=\s*(parseNumberRange|parseNumberRangePair)\s+(.*)"
)
_VAR: Final = re.compile(r"(\$\w+)(?:\.(First|Second))?")


def has_template(text: str) -> bool:
    """True if `text` has any template action (cheap check before rendering)."""
    return "{{" in text


@dataclass(frozen=True, slots=True)
class Rendered:
    """The rendered text, and notes for the user (unset environment variables)."""

    text: str
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class _Node:
    """A parsed template: literal text, an expression, or a range block."""

    kind: str  # "text", "expr" or "range"
    value: str = ""
    line: int = 0
    var: str = ""
    func: str = ""
    args: tuple[str, ...] = ()
    body: list[_Node] = field(default_factory=list)


def parse_number_range(text: str) -> list[int]:
    """frp's parseNumberRange: "1000-1002,2000" -> [1000, 1001, 1002, 2000]."""
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low_text, dash, high_text = part.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise ValueError(f"{part!r} is not a number or a range like 6000-6006") from None
        if high < low:
            raise ValueError(f"range {part!r} ends before it starts")
        if len(numbers) + high - low + 1 > MAX_RANGE_ITEMS:
            raise ValueError(f"more than {MAX_RANGE_ITEMS} numbers in {text!r}")
        numbers.extend(range(low, high + 1))
    return numbers


def parse_number_range_pair(first: str, second: str) -> list[tuple[int, int]]:
    """frp's parseNumberRangePair: two ranges of the same length, paired item by item."""
    a, b = parse_number_range(first), parse_number_range(second)
    if len(a) != len(b):
        raise ValueError(f"{first!r} has {len(a)} numbers but {second!r} has {len(b)}")
    return list(zip(a, b, strict=True))


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    def error(self, line: int, reason: str) -> ConfigError:
        return ConfigError(self.source, f"line {line}", reason)

    def parse(self) -> list[_Node]:
        root: list[_Node] = []
        stack: list[list[_Node]] = [root]
        opened: list[_Node] = []
        pos = 0
        trim_next = False
        for match in _ACTION.finditer(self.text):
            literal = self.text[pos : match.start()]
            if trim_next:
                literal = literal.lstrip()
            if match.group(1):
                literal = literal.rstrip()
            stack[-1].append(_Node("text", literal))
            trim_next = bool(match.group(3))
            pos = match.end()
            line = self.text.count("\n", 0, match.start()) + 1
            action = match.group(2).strip()
            if action.startswith("/*") and action.endswith("*/"):
                continue
            if action == "end":
                if len(stack) == 1:
                    raise self.error(line, "{{ end }} without a {{ range }}")
                stack.pop()
                opened.pop()
                continue
            ranged = _RANGE.fullmatch(action)
            if ranged:
                node = self._range(ranged, line)
                stack[-1].append(node)
                stack.append(node.body)
                opened.append(node)
                continue
            stack[-1].append(_Node("expr", action, line))
        tail = self.text[pos:]
        stack[-1].append(_Node("text", tail.lstrip() if trim_next else tail))
        if opened:
            raise self.error(opened[-1].line, "{{ range }} without its {{ end }}")
        return root

    def _range(self, match: re.Match[str], line: int) -> _Node:
        import shlex  # only a {{ range }} splits arguments

        try:
            args = tuple(shlex.split(match.group(4)))
        except ValueError as exc:
            raise self.error(line, f"bad arguments to {match.group(3)}: {exc}") from None
        wanted = 1 if match.group(3) == "parseNumberRange" else 2
        if len(args) != wanted:
            raise self.error(
                line, f"{match.group(3)} takes {wanted} quoted argument(s), got {len(args)}"
            )
        return _Node("range", line=line, var=match.group(2), func=match.group(3), args=args)


def render(text: str, source: str, env: Mapping[str, str]) -> Rendered:
    """Render frp's template subset in `text`; `source` names the file in errors."""
    if not has_template(text):
        return Rendered(text)
    nodes = _Parser(text, source).parse()
    notes: list[str] = []
    out: list[str] = []
    _render(nodes, {}, env, source, notes, out)
    rendered = "".join(out)
    if len(rendered) > MAX_RENDERED_CHARS:
        raise ConfigError(source, "", f"the rendered template is over {MAX_RENDERED_CHARS} chars")
    return Rendered(rendered, tuple(dict.fromkeys(notes)))


def _render(
    nodes: list[_Node],
    scope: dict[str, object],
    env: Mapping[str, str],
    source: str,
    notes: list[str],
    out: list[str],
) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "expr":
            out.append(_expr(node, scope, env, source, notes))
        else:
            try:
                items: list[object]
                if node.func == "parseNumberRange":
                    items = list(parse_number_range(node.args[0]))
                else:
                    items = list(parse_number_range_pair(node.args[0], node.args[1]))
            except ValueError as exc:
                raise ConfigError(source, f"line {node.line}", f"{node.func}: {exc}") from None
            for item in items:
                _render(node.body, {**scope, node.var: item}, env, source, notes, out)


def _expr(
    node: _Node, scope: dict[str, object], env: Mapping[str, str], source: str, notes: list[str]
) -> str:
    env_match = _ENV.fullmatch(node.value)
    if env_match:
        name = env_match.group(1)
        if name not in env:
            notes.append(
                f"line {node.line}: environment variable {name} is not set; frp and "
                "tunnelkit render it as an empty string"
            )
        return env.get(name, "")
    var_match = _VAR.fullmatch(node.value)
    if var_match and var_match.group(1) in scope:
        value = scope[var_match.group(1)]
        member = var_match.group(2)
        if isinstance(value, tuple):
            if member is None:
                raise ConfigError(source, f"line {node.line}", "use .First or .Second of a pair")
            return str(value[0] if member == "First" else value[1])
        if member is not None:
            raise ConfigError(source, f"line {node.line}", f"{member} is only for pairs")
        return str(value)
    raise ConfigError(
        source,
        f"line {node.line}",
        f"the template action {{{{ {node.value} }}}} is not supported yet; tunnelkit renders "
        "{{ .Envs.NAME }}, parseNumberRange and parseNumberRangePair",
    )
