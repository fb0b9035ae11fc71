"""Reads a Dockerfile into stages of (instruction, arguments), without docker."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Stage", "dockerignore_excludes", "parse_dockerfile"]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """`ENV key=value ...` pairs of this stage (the legacy `ENV key value` form too)."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            parts = shlex.split(args)
            if parts and "=" not in parts[0]:
                values[parts[0]] = args.split(None, 1)[1].strip()
                continue
            for part in parts:
                key, _, value = part.partition("=")
                values[key] = value
        return values

    def exec_form(self, keyword: str) -> list[str] | None:
        """The last `keyword` (ENTRYPOINT, CMD) in JSON exec form, None if absent or shell form."""
        found = self.all(keyword)
        if not found:
            return None
        try:
            value = json.loads(found[-1])
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue  # comments and blank lines inside a continuation are skipped, as docker does
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            lines.append(line)
    if pending.strip():
        lines.append(pending.strip())
    return lines


def parse_dockerfile(path: Path) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = rest.partition("=")
                args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether the build context leaves out `path` (or a parent directory of it).

    Docker's rules: patterns are relative to the context root, `**` matches any number of
    directories, a leading `!` re-includes, and the last matching pattern wins.
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = _glob_regex(pattern)
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    pieces = []
    for i, segment in enumerate(pattern.split("/")):
        if segment == "**":
            pieces.append("(?:[^/]+/)*" if i < len(pattern.split("/")) - 1 else ".*")
            continue
        translated = fnmatch.translate(segment).removeprefix("(?s:").removesuffix(")\\Z")
        pieces.append(translated.replace(".*", "[^/]*") + "/")
    regex = "".join(pieces)
    if regex.endswith("/"):
        regex = regex[:-1]
    return re.compile(regex)
