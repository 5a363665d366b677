"""Located YAML nodes and the issues found in them.

A risk manager editing limits at 03:00 must get *every* mistake at once, each at
``file:line:column`` with its key path, so documents are composed with a :class:`LineLoader`
(a ``yaml.SafeLoader``: no arbitrary objects) into nodes that keep their marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml


# Guards against alias bombs ("billion laughs"): far above any sane config.
MAX_NODES = 100_000


# Issues


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    line: int
    column: int
    key_path: str
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        # Severity is left to the caller (`killswitch check` prefixes it).
        path = f"{self.key_path}: " if self.key_path else ""
        return f"{self.file}:{self.line}:{self.column}: {path}{self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        lines = [str(i) for i in self.issues]
        noun = "error" if len(self.issues) == 1 else "errors"
        super().__init__(f"{len(self.issues)} configuration {noun}:\n" + "\n".join(lines))


# Located YAML nodes


@dataclass(frozen=True, slots=True)
class Mark:
    file: str
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True, slots=True)
class YScalar:
    mark: Mark
    value: Any


@dataclass(frozen=True, slots=True)
class YSeq:
    mark: Mark
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class YMap:
    mark: Mark
    # key -> (mark of the key, value node). Keys are unique (duplicates are issues).
    entries: Mapping[str, tuple[Mark, Any]]


YNode = YScalar | YSeq | YMap

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class LineLoader(yaml.SafeLoader):
    """A SafeLoader whose documents become :class:`YMap`/:class:`YSeq`/:class:`YScalar`
    carrying their start marks, with duplicate keys reported instead of silently
    overwritten (PyYAML keeps the last one, which would hide a mistyped limit)."""

    def __init__(self, stream: str, display_name: str, issues: list[ConfigIssue]) -> None:
        super().__init__(stream)
        self.display_name = display_name
        self.issues = issues
        self._n_nodes = 0
        self.aliases_seen = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1  # so "too large" blames aliases only when there are some
        return super().compose_node(parent, index)

    def located_document(self) -> YNode | None:
        node = self.get_single_node()
        if node is None:
            return None
        return self._convert(node, "", frozenset())

    def _mark(self, node: yaml.Node) -> Mark:
        m = node.start_mark
        return Mark(self.display_name, m.line + 1, m.column + 1)

    def _issue(self, mark: Mark, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(mark.file, mark.line, mark.column, path, message))

    def _convert(self, node: yaml.Node, path: str, ancestors: frozenset[int]) -> YNode:
        self._n_nodes += 1
        if self._n_nodes > MAX_NODES:
            raise _TooLarge(self._mark(node))
        mark = self._mark(node)
        if id(node) in ancestors:  # a recursive alias (&a [*a])
            self._issue(mark, path, "recursive YAML alias")
            return YScalar(mark, None)
        inner = ancestors | {id(node)}
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                self._issue(mark, path, f"unsupported YAML tag {node.tag}")
            entries: dict[str, tuple[Mark, YNode]] = {}
            for key_node, value_node in node.value:
                key_mark = self._mark(key_node)
                if key_node.tag == _MERGE_TAG:
                    self._issue(key_mark, path, "YAML merge keys (<<) are not supported; write keys out")
                    continue
                key = self._scalar_value(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self._issue(key_mark, path, "mapping keys must be plain strings")
                    continue
                child_path = f"{path}.{key}" if path else key
                if key in entries:
                    first = entries[key][0]
                    self._issue(key_mark, child_path, f"duplicate key {key!r} (first defined at line {first.line})")
                    continue
                entries[key] = (key_mark, self._convert(value_node, child_path, inner))
            return YMap(mark, entries)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                self._issue(mark, path, f"unsupported YAML tag {node.tag}")
            return YSeq(mark, tuple(self._convert(n, f"{path}[{i}]", inner) for i, n in enumerate(node.value)))
        return YScalar(mark, self._scalar_value(node, path))

    def _scalar_value(self, node: yaml.Node, path: str) -> Any:
        try:
            return self.construct_object(node, deep=True)
        except Exception as exc:  # noqa: BLE001 - third-party constructor on untrusted text
            problem = getattr(exc, "problem", None) or type(exc).__name__
            self._issue(self._mark(node), path, f"invalid YAML value ({problem})")
            return None


class _TooLarge(Exception):
    def __init__(self, mark: Mark) -> None:
        super().__init__("too large")
        self.mark = mark


def yaml_issue(exc: yaml.YAMLError, display_name: str) -> ConfigIssue:
    if isinstance(exc, yaml.reader.ReaderError):
        return ConfigIssue(display_name, 1, 1, "", f"YAML syntax error: {exc.reason} "
                                                   f"(character #{exc.character:x} at offset {exc.position})"
                           if isinstance(exc.character, int) else f"YAML syntax error: {exc.reason}")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    message = f"YAML syntax error: {context + ', ' if context else ''}{problem}"
    if _tab_in_indentation(mark) or "'\\t'" in problem:
        message += "; YAML does not allow tabs for indentation: indent with spaces"
    return ConfigIssue(display_name, line, column, "", message)


def _tab_in_indentation(mark: Any) -> bool:
    """Whether the line of ``mark`` starts with whitespace containing a tab."""
    buffer = getattr(mark, "buffer", None)
    if not isinstance(buffer, str):
        return False
    lines = buffer.split("\n")
    if not 0 <= mark.line < len(lines):
        return False
    text = lines[mark.line]
    indent = text[: len(text) - len(text.lstrip(" \t"))]
    return "\t" in indent


def parse_yaml(text: str, display_name: str, issues: list[ConfigIssue]) -> YNode | None:
    """Compose ``text`` into located nodes; syntax problems become issues, never raise."""
    loader = None
    try:
        loader = LineLoader(text, display_name, issues)  # the reader already checks characters
        return loader.located_document()
    except yaml.YAMLError as exc:
        issues.append(yaml_issue(exc, display_name))
    except _TooLarge as exc:
        why = f" once its {loader.aliases_seen} YAML alias(es) are expanded" if loader.aliases_seen else ""
        issues.append(ConfigIssue(exc.mark.file, exc.mark.line, exc.mark.column, "",
                                  f"document too large: more than {MAX_NODES} YAML nodes{why}"))
    except RecursionError:
        issues.append(ConfigIssue(display_name, 1, 1, "", "document nested too deeply"))
    finally:
        if loader is not None:
            loader.dispose()
    return None


