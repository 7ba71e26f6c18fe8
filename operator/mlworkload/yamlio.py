"""YAML in and out: multi-document input read defensively, anchor-free deterministic output.

Reading is where hostile input first arrives (`mlworkload -f`, stdin, docs and tests), so it
accepts only what could become a Kubernetes object: UTF-8 text of at most 3 MiB, JSON values
(strings, finite numbers, booleans, null, lists, mappings with string keys), no duplicate keys,
bounded nesting and a bounded size once aliases are expanded. Everything else is refused as
`Unreadable`, naming the file and the line, column or byte offset; every bad key of an input is
reported at once, and anything else ends the read of that input.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from mlworkload.problems import Problem

# libyaml's emitter when PyYAML was built with it: five times faster for the same output.
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_INPUT_BYTES = 3 * 1024 * 1024
"""Kubernetes' own limit: the API server refuses request bodies over 3 MiB (k8s.io/apiserver,
`MaxRequestBodyBytes`; etcd stores at most 1.5 MiB per object), so a larger file could never be
applied, and the cap bounds every later stage's work."""

MAX_NODES = 250_000
"""YAML nodes per input (file or stdin), every alias counted at each use with all it refers to.

Why count rather than forbid aliases: kubectl accepts anchors and merge keys (`<<: *defaults` for
worker groups that share settings), so refusing them would refuse working manifests. What must not
happen is expansion: PyYAML shares aliased objects, so a billion-laughs document loads in
microseconds, but pydantic, the builders and the emitters then walk every reference (a 1 KiB file
became 10^9 nodes and `render` ran out of memory). The count is exact and cheap (each node's
expanded size is known when it closes) and stops the read at the first node over the limit. A real
MLWorkload has a few hundred nodes, so the limit leaves room for hundreds of them in one file while
keeping a whole run under a few seconds.
"""

MAX_DEPTH = 100
"""Nested lists and mappings, aliases expanded. An MLWorkload's schema is about a dozen levels deep
(runtimeEnv adds a few); 100 keeps every recursive consumer (pydantic, json, the emitter) far from
Python's recursion limit. It also protects libyaml: its scanner is quadratic in flow nesting (100,000
`[` take about 50 s, and PyYAML's own C composer overflows the C stack), so nodes are composed here,
from events, and the read stops at the first level too deep."""

UNREADABLE = "unreadable"
"""`Problem.rule` of input that is not a readable Kubernetes object (the CLI's exit code 2)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML 1.1 types that have no JSON form: kubectl cannot send them, so neither may we accept them.
_NON_JSON_TAGS = [f"tag:yaml.org,2002:{name}" for name in ("binary", "timestamp", "set", "omap", "pairs")]
# Implicit types PyYAML resolves but Kubernetes' YAML reader keeps as strings: `date: 2024-01-01`
# must stay a string, and a plain `=` would otherwise fail with "no constructor for tag:yaml.org,2002:value".
_STRING_LIKE_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("timestamp", "value")}


class Unreadable(yaml.YAMLError):
    """Input that is not a readable Kubernetes document; carries every problem found, as `Refused` does.

    A `yaml.YAMLError`, so code that reads YAML and handles bad YAML handles this too.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


class _Refusal(yaml.MarkedYAMLError):
    """One of this module's own refusals at a position: printed without a "not valid YAML" prefix."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(problem=message, problem_mark=mark)


class _NoAliasDumper(_SafeDumper):  # type: ignore[valid-type,misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_NoAliasDumper.add_representer(str, _str_presenter)


def dump(document: Any) -> str:
    """One YAML document, keys in the order they were built, no anchors."""
    return yaml.dump(document, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=100)


def dump_all(documents: Iterable[Any]) -> str:
    return "".join(f"---\n{dump(document)}" for document in documents)


# --- reading -----------------------------------------------------------------------------------------


def _checked(construct: Callable[[SafeConstructor, yaml.Node], Any]) -> Callable[[SafeConstructor, yaml.Node], Any]:
    """A scalar constructor whose failures are refusals at the node, not a ValueError or KeyError.

    PyYAML's own raise bare exceptions for `!!int abc`, `!!bool maybe` or an integer of more than
    4,300 digits (Python's int-from-string limit).
    """

    def checked(constructor: SafeConstructor, node: yaml.Node) -> Any:
        try:
            value = construct(constructor, node)
        except (ValueError, LookupError, ArithmeticError) as error:
            # A ValueError says why (too many digits); a KeyError only repeats the value.
            reason = f": {str(error).split(';')[0]}" if isinstance(error, ValueError) else ""
            raise _Refusal(
                node.start_mark, f"{short_repr(node.value)} is not a valid {_tag_name(node.tag)}{reason}"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            message = "is not a finite number (JSON, and so Kubernetes, has no NaN or infinity)"
            raise _Refusal(node.start_mark, f"{short_repr(node.value)} {message}")
        return value

    return checked


def _not_json(constructor: SafeConstructor, node: yaml.Node) -> Any:
    allowed = "a Kubernetes object holds only strings, numbers, booleans, null, lists and mappings"
    raise _Refusal(node.start_mark, f"tag {_tag_name(node.tag)} is not allowed: {allowed}")


class _JsonLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """PyYAML's safe loader narrowed to JSON values, the only ones a Kubernetes object can hold."""

    yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in _STRING_LIKE_TAGS]
        for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
    }


for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"):
    _JsonLoader.add_constructor(_tag, _checked(SafeConstructor.yaml_constructors[_tag]))
for _tag in _NON_JSON_TAGS:
    _JsonLoader.add_constructor(_tag, _not_json)


def _tag_name(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def short_repr(value: Any, limit: int = 40) -> str:
    """repr() cut to fit a one-line message: a hostile value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _too_large(source: str) -> Unreadable:
    limit = f"{MAX_INPUT_BYTES // 2**20} MiB"
    return Unreadable([_problem(source, f"larger than {limit}, the Kubernetes API server's request size limit")])


def _check_size(text: str, source: str) -> None:
    """Text given as str (docs, tests) is held to the same limit, and must be encodable for libyaml."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        message = f"not UTF-8 text: {error.reason} at character offset {error.start}"
        raise Unreadable([_problem(source, message)]) from None
    if size > MAX_INPUT_BYTES:
        raise _too_large(source)


def decode(data: bytes, source: str) -> str:
    """The text of a file or stdin: at most MAX_INPUT_BYTES of UTF-8, else Unreadable naming the byte."""
    if len(data) > MAX_INPUT_BYTES:
        raise _too_large(source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        message = f"not UTF-8 text: {error.reason} 0x{data[error.start]:02x} at byte offset {error.start} (line {line})"
        raise Unreadable([_problem(source, message)]) from None


def read_all(data: bytes, source: str) -> list[Any]:
    """Every non-empty document of a file's bytes; Unreadable otherwise."""
    return load_all(decode(data, source), source)


def load_all(text: str, source: str = "<input>") -> list[Any]:
    """Every non-empty document of a (multi-document) YAML or JSON text, as JSON values.

    Unreadable (a yaml.YAMLError) for anything this module's docstring refuses; a syntax error, a
    node limit or a recursive alias ends the read, duplicate keys are all collected first.
    """
    _check_size(text, source)
    loader = _JsonLoader(text)
    reader = _Reader(loader, source)
    documents: list[Any] = []
    try:
        while (root := reader.next_document()) is not None:
            document = loader.construct_document(root)
            if document is not None:
                documents.append(document)
    except yaml.YAMLError as error:
        reader.problems.append(_problem_of(error, source))
    finally:
        loader.dispose()
    if reader.problems:
        raise Unreadable(reader.problems)
    return documents


def _problem(where: str, message: str) -> Problem:
    return Problem(where, message, rule=UNREADABLE)


def _at(source: str, mark: Any) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source


def _problem_of(error: yaml.YAMLError, source: str) -> Problem:
    """One line for any YAML error: PyYAML's own messages span several lines with a code excerpt."""
    if isinstance(error, _Refusal):
        return _problem(_at(source, error.problem_mark), str(error.problem))
    if isinstance(error, yaml.MarkedYAMLError):
        problem = error.problem or error.context or "unreadable"
        return _problem(_at(source, error.problem_mark or error.context_mark), f"not valid YAML: {problem}")
    if isinstance(error, yaml.reader.ReaderError):
        character = error.character if isinstance(error.character, int) else ord(error.character[:1] or "\0")
        where = f"character #x{character:04x} at offset {error.position}"
        return _problem(source, f"not valid YAML: {where} ({error.reason})")
    return _problem(source, f"not valid YAML: {' '.join(str(error).split())}")


@dataclass
class _Open:
    """A list or mapping whose items are still being read."""

    node: yaml.CollectionNode
    anchor: str | None
    counted_before: int  # the input's expanded node count before this node
    items: list[yaml.Node] = field(default_factory=list)
    height: int = 1  # levels of lists and mappings in it, this one included, aliases expanded


@dataclass
class _Anchored:
    node: yaml.Node
    size: int | None  # expanded nodes; None while the node is still open (an alias to it would recurse)
    height: int


class _Reader:
    """Composes nodes from libyaml's events, without recursion, checking the limits as it goes.

    PyYAML's composer recurses (and the C one overflows the C stack) and knows nothing of expansion;
    this one knows each node's expanded size and height when it closes, so an alias costs one lookup.
    """

    def __init__(self, loader: _JsonLoader, source: str) -> None:
        self.loader = loader
        self.source = source
        self.counted = 0  # expanded nodes of the input so far
        self.problems: list[Problem] = []

    def next_document(self) -> yaml.Node | None:
        """The next document's root node, or None at the end of the stream."""
        event = self.loader.get_event()
        while isinstance(event, yaml.StreamStartEvent):
            event = self.loader.get_event()
        if event is None or isinstance(event, yaml.StreamEndEvent):
            return None
        root = self._compose(anchors={})
        self.loader.get_event()  # DocumentEndEvent
        return root

    def _compose(self, anchors: dict[str, _Anchored]) -> yaml.Node:
        stack: list[_Open] = []
        while True:
            event = self.loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append(self._open(event, anchors, len(stack) + 1))
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                node, height = self._close(stack.pop(), anchors)
            elif isinstance(event, yaml.AliasEvent):
                node, height = self._alias(event, anchors, len(stack))
            else:
                node, height = self._scalar(event, anchors)
            if not stack:
                return node
            stack[-1].items.append(node)
            stack[-1].height = max(stack[-1].height, height + 1)

    def _count(self, nodes: int, mark: Any) -> None:
        self.counted += nodes
        if self.counted > MAX_NODES:
            limit = f"more than {MAX_NODES:,} YAML nodes once aliases are expanded"
            raise _Refusal(mark, f"{limit} (a billion-laughs document?); one input may hold at most that many")

    def _scalar(self, event: yaml.ScalarEvent, anchors: dict[str, _Anchored]) -> tuple[yaml.Node, int]:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        start: Any = event.start_mark  # libyaml's marks are not yaml.Mark to the type stubs
        end: Any = event.end_mark
        node = yaml.ScalarNode(tag, event.value, start, end, style=event.style)
        self._count(1, event.start_mark)
        if event.anchor is not None:
            anchors[event.anchor] = _Anchored(node, 1, 0)
        return node, 0

    def _open(self, event: yaml.CollectionStartEvent, anchors: dict[str, _Anchored], depth: int) -> _Open:
        if depth > MAX_DEPTH:
            raise _Refusal(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        mapping = isinstance(event, yaml.MappingStartEvent)
        node_type = yaml.MappingNode if mapping else yaml.SequenceNode
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(node_type, None, event.implicit)
        start: Any = event.start_mark
        node = node_type(tag, [], start, None, flow_style=event.flow_style)
        opened = _Open(node, event.anchor, self.counted)
        self._count(1, event.start_mark)
        if event.anchor is not None:
            anchors[event.anchor] = _Anchored(node, None, 0)
        return opened

    def _close(self, opened: _Open, anchors: dict[str, _Anchored]) -> tuple[yaml.Node, int]:
        node = opened.node
        if isinstance(node, yaml.MappingNode):
            node.value = list(zip(opened.items[::2], opened.items[1::2], strict=True))
            self._check_keys(node)
        else:
            node.value = opened.items
        anchored = anchors.get(opened.anchor or "")
        if anchored is not None and anchored.node is node:  # its anchor was not redefined inside it
            anchored.size, anchored.height = self.counted - opened.counted_before, opened.height
        return node, opened.height

    def _alias(self, event: yaml.AliasEvent, anchors: dict[str, _Anchored], depth: int) -> tuple[yaml.Node, int]:
        anchored = anchors.get(event.anchor or "")
        if anchored is None:
            raise _Refusal(event.start_mark, f"alias *{event.anchor} refers to no anchor before it")
        if anchored.size is None:
            recursive = "is inside the node it refers to; a Kubernetes object cannot contain itself"
            raise _Refusal(event.start_mark, f"alias *{event.anchor} {recursive}")
        if depth + anchored.height > MAX_DEPTH:
            raise _Refusal(event.start_mark, f"alias *{event.anchor} nests more than {MAX_DEPTH} levels deep")
        self._count(anchored.size, event.start_mark)
        return anchored.node, anchored.height

    def _check_keys(self, node: yaml.MappingNode) -> None:
        """Refuse a key given twice, and a key that is not a string.

        A duplicate: kubectl refuses it, PyYAML would silently keep the last value. Keys are compared
        as loaded; merged keys (`<<: *base`) may be overridden, which is what merging is for. A key
        that loads as null, a boolean or a number (`? `, `on:`, `8080:`) has no place in a JSON
        object: kubectl refuses null and silently renames the others ("true", "8080"), and past
        this point every consumer expects strings. Quoting it says what is meant.
        """
        seen: dict[str, yaml.Node] = {}
        for key, _ in node.value:
            value = self._key(key)
            where = _at(self.source, key.start_mark)
            if value is _NOT_COMPARED:
                continue
            if not isinstance(value, str):
                message = f"key {short_repr(key.value)} is read as {_json_type(value)}; keys must be strings: quote it"
                self.problems.append(_problem(where, message))
                continue
            first = seen.setdefault(value, key)
            if first is not key:
                message = f"duplicate key {short_repr(key.value)} (first at line {first.start_mark.line + 1})"
                self.problems.append(_problem(where, f"{message}; kubectl refuses them"))

    def _key(self, key: yaml.Node) -> Any:
        """The key as loaded; _NOT_COMPARED for a merge key or a key the constructor refuses anyway."""
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            return _NOT_COMPARED  # a list or mapping as a key is refused as unhashable when constructed
        try:
            return self.loader.construct_object(key, deep=True)
        except yaml.YAMLError:
            return _NOT_COMPARED  # refused, with its reason, when the document is constructed


_NOT_COMPARED = object()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "an integer" if isinstance(value, int) else "a number" if isinstance(value, float) else type(value).__name__
