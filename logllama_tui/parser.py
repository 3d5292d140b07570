"""Records -> log keys: Drain (drain3) templates, a vocabulary of keys, and a safe JSON state.

drain3 is always given an explicit TemplateMinerConfig and never a persistence handler: with
`config=None` it reads `drain3.ini` from the working directory, and its own persistence is
jsonpickle, whose loads can run code. We save the Drain tree and clusters as plain JSON instead,
validate every field on load, and rebuild drain3's objects from it exactly, so a reloaded parser
gives every line the key it gave before saving.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drain3 import TemplateMiner
from drain3.drain import LogCluster, Node
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from logllama_tui import config as C
from logllama_tui.config import ParserConfig
from logllama_tui.errors import BadInput
from logllama_tui.parser_state import STATE_FORMAT, STATE_VERSION, read_state_file, validate_state
from logllama_tui.records import Event, Record

MATCH_STRATEGY = "fallback"
"""drain3 full_search_strategy for `match`: a linear search among same-length templates, only
when the tree search misses (see benchmarks/bench_parse.py for what it costs and what it finds)."""
MATCH_CACHE_SIZE = 50_000
"""Distinct contents remembered by `match` (logs repeat themselves)."""
MATCH_CACHE_MAX_CHARS = 2_000
"""Longer contents are not cached."""
CACHE_WINDOW = 4_096
"""Cache misses between decisions on whether filling the cache pays."""
CACHE_MIN_HIT_RATE = 0.05
"""Below this share of hits in a window the cache stops taking new lines ..."""
CACHE_PROBE_EVERY = 16
"""... and tries again after this many windows."""


class Vocabulary:
    """Key names (Drain cluster "c12", or an EventId "E5") <-> integer keys from FIRST_KEY."""

    def __init__(self, names: Iterable[str] = (), frozen: bool = False) -> None:
        self._names: list[str] = list(C.RESERVED_NAMES)
        self._keys: dict[str, int] = {}
        for name in names:
            self.add(name)
        self.frozen = frozen

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    @property
    def n_keys(self) -> int:
        """Real keys (reserved ids not counted)."""
        return len(self._names) - C.FIRST_KEY

    @property
    def names(self) -> list[str]:
        """Names of the real keys, in key order."""
        return self._names[C.FIRST_KEY:]

    def key(self, name: str) -> int:
        """The key of `name`, or UNK when it has none."""
        return self._keys.get(name, C.UNK)

    def add(self, name: str) -> int:
        """The key of `name`, creating it unless frozen (then UNK)."""
        key = self._keys.get(name)
        if key is not None:
            return key
        if getattr(self, "frozen", False):
            return C.UNK
        key = len(self._names)
        self._names.append(name)
        self._keys[name] = key
        return key

    def name(self, key: int) -> str:
        """The name of `key` (the reserved names for 0..3)."""
        if not 0 <= key < len(self._names):
            raise KeyError(key)
        return self._names[key]


def _miner_config(cfg: ParserConfig) -> TemplateMinerConfig:
    """drain3's config built from ours: never read from drain3.ini."""
    tmc = TemplateMinerConfig()
    tmc.drain_sim_th = cfg.sim_th
    tmc.drain_depth = cfg.depth
    tmc.drain_max_children = cfg.max_children
    tmc.drain_max_clusters = cfg.max_clusters
    tmc.drain_extra_delimiters = list(cfg.extra_delimiters)
    tmc.parametrize_numeric_tokens = cfg.parametrize_numeric_tokens
    tmc.mask_prefix = cfg.mask_prefix
    tmc.mask_suffix = cfg.mask_suffix
    tmc.masking_instructions = [MaskingInstruction(rx, name) for rx, name in cfg.masks]
    tmc.profiling_enabled = False
    return tmc


class LogParser:
    """Drain through drain3 plus a vocabulary: `learn` grows both, `match` only reads them."""

    def __init__(self, config: ParserConfig | None = None, match_strategy: str = MATCH_STRATEGY,
                 cache_size: int = MATCH_CACHE_SIZE) -> None:
        self.config = config or ParserConfig()
        if match_strategy not in ("never", "fallback", "always"):
            raise BadInput(f"unknown match strategy {match_strategy!r}: use never, fallback or always")
        self.match_strategy = match_strategy
        self._cache_size = cache_size
        self.miner = TemplateMiner(persistence_handler=None, config=_miner_config(self.config))
        self.vocab = Vocabulary()
        self._templates: dict[int, str] = {}  # key -> last known template (clusters may evict)
        self._cache: dict[str, tuple[int, str]] = {}
        self._caching = cache_size > 0
        self._hits = self._misses = self._skipped = 0
        self.trained_keys: frozenset[int] | None = None
        """When set, `match` maps every other real key to UNK (never seen in a training sequence)."""

    def restrict_to(self, keys: Iterable[int]) -> None:
        """From now on, `match` treats keys outside `keys` as unseen (UNK).

        The parser learns templates from every line it is given, test lines included; only the
        keys that occurred in training sequences are "seen in training" for detection.
        """
        self.trained_keys = frozenset(keys)
        self._cache.clear()

    @property
    def cache_size(self) -> int:
        """Most contents `match` remembers (0: no cache)."""
        return self._cache_size

    @cache_size.setter
    def cache_size(self, size: int) -> None:
        self._cache_size = size
        self._cache.clear()
        self._caching = size > 0
        self._hits = self._misses = self._skipped = 0

    # -- learning and matching ------------------------------------------------------------
    def learn(self, record: Record) -> Event:
        """Key `record`, growing the templates and the vocabulary."""
        if record.event_id is not None:
            key = self.vocab.add(record.event_id)
            if key != C.UNK and (key not in self._templates or (
                    record.template and self._templates[key] == record.event_id)):
                self._templates[key] = record.template or record.event_id
            return Event(record, key, self._templates.get(key, record.template or record.event_id))
        masked = self.miner.masker.mask(record.content or "")
        cluster, change = self.miner.drain.add_log_message(masked)
        template = cluster.get_template()
        key = self.vocab.add(f"c{cluster.cluster_id}")
        if change != "none":
            self._cache.clear()
            if key != C.UNK:
                self._templates[key] = template
        return Event(record, key, template)

    def match(self, record: Record) -> Event:
        """Key `record` without learning: an unseen template (or EventId) is UNK."""
        event = self._match(record)
        if self.trained_keys is not None and event.key >= C.FIRST_KEY \
                and event.key not in self.trained_keys:
            event.key = C.UNK  # parsed, but never in a training sequence: the template is kept
        return event

    def _match(self, record: Record) -> Event:
        if record.event_id is not None:
            key = self.vocab.key(record.event_id)
            if key == C.UNK:
                return Event(record, key, record.template or record.event_id)
            return Event(record, key, self._templates.get(key, record.event_id))
        content = record.content or ""
        hit = self._cache.get(content)
        if hit is not None:
            self._hits += 1
            return Event(record, hit[0], hit[1])
        hit = self._match_content(content)
        self._misses += 1
        if self._caching and len(content) <= MATCH_CACHE_MAX_CHARS:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()  # cheaper than evicting one by one; hot lines come back at once
            self._cache[content] = hit
        if self._misses >= CACHE_WINDOW:
            self._adapt_cache()
        return Event(record, hit[0], hit[1])

    def _adapt_cache(self) -> None:
        """Stop filling the cache while it rarely hits (every line new, e.g. HDFS ids); probe again later."""
        if self.cache_size <= 0:
            self._caching = False
        elif self._caching:
            self._caching = self._hits >= CACHE_MIN_HIT_RATE * (self._hits + self._misses)
            self._skipped = 0
        else:
            self._skipped += 1
            self._caching = self._skipped >= CACHE_PROBE_EVERY
        self._hits = self._misses = 0

    def _match_content(self, content: str) -> tuple[int, str]:
        masked = self.miner.masker.mask(content)
        cluster = self.miner.drain.match(masked, self.match_strategy)
        if cluster is None:
            return C.UNK, " ".join(self.miner.drain.get_content_as_tokens(masked))
        key = self.vocab.key(f"c{cluster.cluster_id}")
        if key == C.UNK:
            return C.UNK, cluster.get_template()
        return key, cluster.get_template()

    def template(self, key: int) -> str:
        """The current template text of `key` (reserved names for 0..3)."""
        if key < C.FIRST_KEY:
            return self.vocab.name(key)
        name = self.vocab.name(key)
        if name.startswith("c") and name[1:].isdigit():
            cluster = self.miner.drain.id_to_cluster.get(int(name[1:]))
            if cluster is not None:
                return cluster.get_template()
        return self._templates.get(key, name)

    # -- state -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The whole state as plain JSON-able data (see `from_json`)."""
        drain = self.miner.drain
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": C.to_dict(self.config),
            "match_strategy": self.match_strategy,
            "vocab": {
                "names": self.vocab.names,
                "templates": [self._templates.get(k, self.vocab.name(k))
                              for k in range(C.FIRST_KEY, len(self.vocab))],
                "frozen": self.vocab.frozen,
            },
            "drain": {
                "clusters_counter": drain.clusters_counter,
                "clusters": [
                    [c.cluster_id, list(c.log_template_tokens), c.size] for c in _clusters_in_order(drain)
                ],
                "tree": _node_to_json(drain.root_node),
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> LogParser:
        """Rebuild a parser from `to_json` output; anything else raises BadCheckpoint."""
        state = validate_state(data)
        parser = cls(state["config"], match_strategy=state["match_strategy"])
        parser.vocab = Vocabulary(state["names"])
        parser.vocab.frozen = state["frozen"]
        parser._templates = {C.FIRST_KEY + i: t for i, t in enumerate(state["templates"])}
        drain = parser.miner.drain
        drain.clusters_counter = state["clusters_counter"]
        for cid, tokens, size in state["clusters"]:
            cluster = LogCluster(tokens, cid)
            cluster.size = size
            drain.id_to_cluster[cid] = cluster
        drain.root_node = _node_from_json(state["tree"])
        return parser

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state as JSON atomically (temp file in the same dir, fsync, rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LogParser:
        """Read a state written by `save`; a missing, corrupt or foreign file is BadCheckpoint."""
        return cls.from_json(read_state_file(Path(path)))


def _clusters_in_order(drain: Any) -> list[LogCluster]:
    """Clusters, least recently used first when capped (so eviction order survives a reload)."""
    order = getattr(drain.id_to_cluster, "_LRUCache__order", None)
    if order is not None:
        return [drain.id_to_cluster.get(cid) for cid in order]
    return list(drain.id_to_cluster.values())


def _node_to_json(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node.key_to_child_node:
        out["children"] = {tok: _node_to_json(ch) for tok, ch in node.key_to_child_node.items()}
    if node.cluster_ids:
        out["ids"] = list(node.cluster_ids)
    return out


def _node_from_json(data: dict[str, Any]) -> Node:
    node = Node()
    node.key_to_child_node = {tok: _node_from_json(ch) for tok, ch in data.get("children", {}).items()}
    node.cluster_ids = list(data.get("ids", []))
    return node


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that a crash leaves either the old file or the new one."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise BadInput(f"cannot write {path}: directory {directory} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


__all__ = ["Vocabulary", "LogParser", "MATCH_STRATEGY", "atomic_write_text"]
