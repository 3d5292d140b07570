"""Strict validation of a saved parser state: anything but our own well-formed JSON is refused."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from logllama_tui import config as C
from logllama_tui.config import ParserConfig
from logllama_tui.errors import BadCheckpoint

STATE_FORMAT = "logllama-parser"
STATE_VERSION = 1
MAX_STATE_BYTES = 512 * 1024 * 1024
_REQUIRED = ("format", "version", "config", "match_strategy", "vocab", "drain")
_FIX = "save it again with this version of logllama (or retrain)"


def _fail(msg: str) -> BadCheckpoint:
    return BadCheckpoint(f"parser state: {msg}; {_FIX}")


def _refuse_pickle_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: refuse jsonpickle tags and duplicate keys at any depth."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key.startswith("py/"):
            raise BadCheckpoint(
                f"parser state contains a jsonpickle tag {key!r}: refusing to load it (it could run "
                "code); only logllama's own parser JSON is accepted"
            )
        if key in out:
            raise _fail(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_state_text(text: str) -> Any:
    """JSON text -> data, refusing jsonpickle tags; corrupt JSON is BadCheckpoint."""
    try:
        return json.loads(text, object_pairs_hook=_refuse_pickle_keys,
                          parse_constant=_no_constant)
    except BadCheckpoint:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadCheckpoint(f"parser state is not valid JSON ({exc}); {_FIX}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def read_state_file(path: Path) -> Any:
    """Read and parse a state file; missing, unreadable, huge or corrupt is BadCheckpoint."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadCheckpoint(f"parser state {path} does not exist; check the path") from None
    except OSError as exc:
        raise BadCheckpoint(f"cannot read parser state {path}: {exc.strerror}") from None
    if not path.is_file():
        raise BadCheckpoint(f"parser state {path} is not a file; give the JSON file's path")
    if size > MAX_STATE_BYTES:
        raise BadCheckpoint(f"parser state {path} is {size} bytes, over the {MAX_STATE_BYTES} limit")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadCheckpoint(f"cannot read parser state {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadCheckpoint(f"parser state {path} is not UTF-8 JSON (a binary or pickle file?); "
                            "only logllama's own parser JSON is accepted") from None
    try:
        return parse_state_text(text)
    except BadCheckpoint as exc:
        raise BadCheckpoint(f"{path}: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_config(data: Any) -> ParserConfig:
    if not isinstance(data, dict):
        raise _fail("'config' must be an object")
    checks = {
        "sim_th": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        and math.isfinite(v) and 0.0 <= v <= 1.0,
        "depth": lambda v: _is_int(v) and 3 <= v <= 64,
        "max_children": lambda v: _is_int(v) and 2 <= v <= 1_000_000,
        "max_clusters": lambda v: v is None or (_is_int(v) and v >= 1),
        "extra_delimiters": lambda v: isinstance(v, list) and all(isinstance(s, str) and s for s in v),
        "parametrize_numeric_tokens": lambda v: isinstance(v, bool),
        "masks": lambda v: isinstance(v, list) and all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(s, str) for s in m) for m in v),
        "mask_prefix": lambda v: isinstance(v, str),
        "mask_suffix": lambda v: isinstance(v, str),
    }
    for name, value in data.items():
        check = checks.get(name)
        if check is None:
            raise _fail(f"unknown parser setting {name!r}")
        if not check(value):
            raise _fail(f"parser setting {name!r} has a wrong type or range: {value!r}"[:300])
    for rx, _ in data.get("masks", []):
        try:
            re.compile(rx)
        except re.error as exc:
            raise _fail(f"mask regex {rx!r} does not compile ({exc})") from None
    try:
        cfg = C.from_dict(ParserConfig, data)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if isinstance(cfg.sim_th, int):
        cfg = C.from_dict(ParserConfig, {**data, "sim_th": float(cfg.sim_th)})
    return cfg


def _check_tree(node: Any, level: int, max_level: int, seen: set[int]) -> None:
    if not isinstance(node, dict) or set(node) - {"children", "ids"}:
        raise _fail("a Drain tree node must be an object with only 'children' and 'ids'")
    if level > max_level:
        raise _fail("the Drain tree is deeper than its depth setting allows")
    ids = node.get("ids", [])
    if not isinstance(ids, list) or not all(_is_int(i) and i >= 1 for i in ids):
        raise _fail("Drain tree node 'ids' must be a list of positive integers")
    seen.update(ids)
    children = node.get("children", {})
    if not isinstance(children, dict):
        raise _fail("Drain tree node 'children' must be an object")
    for token, child in children.items():
        if level == 0:
            if not token.isdigit():
                raise _fail(f"the Drain tree's first level must be token counts, not {token[:50]!r}")
            if token == "0" and not (isinstance(child, dict) and child.get("ids")):
                raise _fail("the Drain tree node for empty lines has no cluster")
        _check_tree(child, level + 1, max_level, seen)


def _walk_for_pickle_tags(data: Any) -> None:
    """Refuse a jsonpickle tag anywhere in already-parsed data (iterative: no recursion limit)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            _refuse_pickle_keys(list(item.items()))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def validate_state(data: Any) -> dict[str, Any]:
    """Check every field of a parser state; return the pieces needed to rebuild it."""
    _walk_for_pickle_tags(data)
    if not isinstance(data, dict):
        raise _fail("expected a JSON object")
    if data.get("format") != STATE_FORMAT:
        raise BadCheckpoint(
            f"this JSON is not a logllama parser state (its 'format' is {str(data.get('format'))[:40]!r}, "
            f"expected {STATE_FORMAT!r}); give the parser.json that logllama wrote"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise _fail(f"missing {', '.join(missing)}")
    extra = set(data) - set(_REQUIRED)
    if extra:
        raise _fail(f"unknown fields {', '.join(sorted(extra))}")
    if not _is_int(data["version"]) or data["version"] != STATE_VERSION:
        raise BadCheckpoint(
            f"parser state version {data['version']!r} is not supported (this logllama reads "
            f"version {STATE_VERSION}); {_FIX}"
        )
    cfg = _check_config(data["config"])
    if data["match_strategy"] not in ("never", "fallback", "always"):
        raise _fail("'match_strategy' must be never, fallback or always")

    vocab = data["vocab"]
    if not isinstance(vocab, dict) or set(vocab) != {"names", "templates", "frozen"}:
        raise _fail("'vocab' must be an object with names, templates and frozen")
    names, templates = vocab["names"], vocab["templates"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise _fail("vocab 'names' must be a list of non-empty strings")
    if len(set(names)) != len(names) or set(names) & set(C.RESERVED_NAMES):
        raise _fail("vocab 'names' must be unique and not reserved names")
    if not isinstance(templates, list) or len(templates) != len(names) or not all(
            isinstance(t, str) for t in templates):
        raise _fail("vocab 'templates' must be a list of strings, one per name")
    if not isinstance(vocab["frozen"], bool):
        raise _fail("vocab 'frozen' must be true or false")

    drain = data["drain"]
    if not isinstance(drain, dict) or set(drain) != {"clusters_counter", "clusters", "tree"}:
        raise _fail("'drain' must be an object with clusters_counter, clusters and tree")
    counter = drain["clusters_counter"]
    if not _is_int(counter) or counter < 0:
        raise _fail("'clusters_counter' must be a non-negative integer")
    clusters = drain["clusters"]
    if not isinstance(clusters, list):
        raise _fail("'clusters' must be a list")
    ids: set[int] = set()
    for c in clusters:
        if not (isinstance(c, list) and len(c) == 3 and _is_int(c[0]) and 1 <= c[0] <= counter
                and isinstance(c[1], list) and all(isinstance(t, str) for t in c[1])
                and _is_int(c[2]) and c[2] >= 1):
            raise _fail("each cluster must be [id (1..clusters_counter), [tokens], size >= 1]")
        if c[0] in ids:
            raise _fail(f"cluster {c[0]} appears twice")
        ids.add(c[0])
    if cfg.max_clusters is not None and len(ids) > cfg.max_clusters:
        raise _fail("more clusters than max_clusters allows")
    seen: set[int] = set()
    _check_tree(drain["tree"], 0, cfg.depth - 1, seen)
    if cfg.max_clusters is None and not seen <= ids:
        raise _fail("the Drain tree names clusters that are not in 'clusters'")
    for name in names:
        if name.startswith("c") and name[1:].isdigit() and int(name[1:]) > counter:
            raise _fail(f"vocabulary key {name!r} names a cluster that was never created")
    return {
        "config": cfg,
        "match_strategy": data["match_strategy"],
        "names": names,
        "templates": templates,
        "frozen": vocab["frozen"],
        "clusters_counter": counter,
        "clusters": [(c[0], c[1], c[2]) for c in clusters],
        "tree": drain["tree"],
    }

__all__ = ["STATE_FORMAT", "STATE_VERSION", "parse_state_text", "read_state_file", "validate_state"]
