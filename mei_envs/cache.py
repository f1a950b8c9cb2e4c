"""Edge LLM cache with parameter sharing: catalog, cache state and request processes.

The domain model of ``mei_envs/EdgeLLMCache-v0`` (numpy only, no Gymnasium). The env, every
baseline and every oracle call these classes; none copies their formulas.

* :class:`Catalog`: models as sets of parameter blocks with byte sizes. A generated catalog
  (:func:`build_catalog`) takes every size from the cost tables (:mod:`mei_envs.llm.costs`):
  a foundation model is its embedding, its transformer layers and its head; a LoRA child
  shares the whole frozen base and adds an adapter of ``costs.lora_params`` parameters; a
  partial fine-tune shares the embedding, the bottom layers and the head and owns its top-k
  layers; a quantised variant (int8/int4/q4_0...) owns every block (it shares nothing with
  the fp16 weights). A shared block is stored once (TrimCaching: Qu et al., ICDCS 2024,
  arXiv 2405.03990). Blocks used by exactly the same models are merged (they are always held
  together), so a catalog carries few blocks.
* :func:`held_quantities`, :func:`freed_bytes`, :func:`eviction_drop`: the cache state's
  quantities as products over the membership matrix, for one cache or a batch (the native
  vector env). :class:`CacheState` (one cache: the env, baselines, oracles) keeps the same
  quantities block by block and :meth:`CacheState.check` holds it to those products.
* :class:`ZipfDriftRequests` and :func:`load_trace`: the request processes.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mei_envs.llm import catalog as llm_catalog
from mei_envs.llm import costs

MODEL_KINDS = ("base", "lora", "partial", "quantised", "custom")


# ---- catalog -------------------------------------------------------------------------------
class Catalog:
    """Models as sets of byte-sized blocks, with the block-membership matrix precomputed.

    Attributes:
        names: Model names (index = model id).
        kinds: One of :data:`MODEL_KINDS` per model.
        families: Name of the foundation model (or group) each model derives from.
        block_bytes: ``(B,)`` bytes of each (merged) block.
        block_names: A readable name per merged block (its raw blocks joined by ``+``).
        membership: ``(M, B)`` bool, ``membership[m, b]``: model ``m`` uses block ``b``.
        model_bytes: ``(M,)`` bytes of each model stored alone.
        unique_bytes: Bytes of the whole catalog with every shared block stored once.
        shared_fraction: ``(M,)`` share of a model's bytes in blocks other models also use.
    """

    def __init__(
        self,
        names: Sequence[str],
        blocks: Sequence[Sequence[str]],
        block_sizes: Mapping[str, float],
        *,
        kinds: Sequence[str] | None = None,
        families: Sequence[str] | None = None,
        where: str = "catalog",
    ) -> None:
        names = [str(n) for n in names]
        if not names:
            raise ValueError(f"{where}: needs at least one model")
        seen: set[str] = set()
        for n in names:
            if not n:
                raise ValueError(f"{where}: a model has an empty name")
            if n in seen:
                raise ValueError(f"{where}: duplicate model name {n!r}")
            seen.add(n)
        if len(blocks) != len(names):
            raise ValueError(f"{where}: {len(names)} model names but {len(blocks)} block lists")
        raw_names = list(block_sizes)
        raw_index = {b: i for i, b in enumerate(raw_names)}
        raw_sizes = np.empty(len(raw_names))
        for i, b in enumerate(raw_names):
            v = block_sizes[b]
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise ValueError(f"{where}: block {b!r} size={v!r}: must be a number > 0 [bytes]")
            if not (math.isfinite(float(v)) and float(v) > 0):
                raise ValueError(f"{where}: block {b!r} size={v!r}: must be finite and > 0 [bytes]")
            raw_sizes[i] = float(v)
        raw_member = np.zeros((len(names), len(raw_names)), dtype=bool)
        for m, (name, blist) in enumerate(zip(names, blocks, strict=True)):
            if isinstance(blist, str) or len(blist) == 0:
                raise ValueError(f"{where}: model {name!r} blocks={blist!r}: need a non-empty list")
            for b in blist:
                if b not in raw_index:
                    raise ValueError(
                        f"{where}: model {name!r} uses unknown block {b!r}; "
                        f"known blocks include {sorted(raw_index)[:10]}"
                    )
                raw_member[m, raw_index[b]] = True
        used = raw_member.any(axis=0)
        if not used.all():
            unused = [raw_names[i] for i in np.flatnonzero(~used)]
            raise ValueError(f"{where}: block(s) {unused[:5]} are used by no model")
        # Merge blocks used by exactly the same models: they are always held together.
        _, first, inverse = np.unique(raw_member.T, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(first)  # keep catalog order
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        merged_of_raw = rank[inverse]
        n_blocks = order.size
        self.block_bytes = np.bincount(merged_of_raw, weights=raw_sizes, minlength=n_blocks)
        self.membership = np.zeros((len(names), n_blocks), dtype=bool)
        self.membership[:, merged_of_raw] = raw_member
        groups: list[list[str]] = [[] for _ in range(n_blocks)]
        for i, g in enumerate(merged_of_raw):
            groups[g].append(raw_names[i])
        self.block_names = [_group_name(g) for g in groups]
        self.raw_blocks = len(raw_names)
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.kinds = list(kinds) if kinds is not None else ["custom"] * len(names)
        self.families = list(families) if families is not None else list(names)
        for kind in self.kinds:
            if kind not in MODEL_KINDS:
                raise ValueError(f"{where}: kind={kind!r}: must be one of {list(MODEL_KINDS)}")
        self._derive()

    def _derive(self) -> None:
        mem = self.membership
        self.n_models, self.n_blocks = mem.shape
        self.member_f = mem.astype(np.float64)  # for matrix products (BLAS)
        self.not_member = ~mem  # (M, B): blocks each model does not use
        self.not_member_f = self.not_member.astype(np.float64)
        self.member_bytes = self.member_f * self.block_bytes  # (M, B)
        # One product gives both the missing-block counts and the missing bytes of all models.
        self.count_and_bytes = np.vstack([self.member_f, self.member_bytes])  # (2M, B)
        self.count_and_bytes_t = np.ascontiguousarray(self.count_and_bytes.T)  # (B, 2M)
        self.member_bytes_t = np.ascontiguousarray(self.member_bytes.T)  # (B, M)
        self.model_bytes = self.member_bytes.sum(axis=1)
        self.unique_bytes = float(self.block_bytes.sum())
        users = mem.sum(axis=0)
        self.block_users = users
        self.shared_fraction = (self.member_bytes @ (users > 1)) / self.model_bytes
        self.model_blocks = [np.flatnonzero(row) for row in mem]
        # Sparse views for the incremental cache state: blocks of each model and models of
        # each block as Python lists, sizes as Python floats.
        self.blocks_of = [b.tolist() for b in self.model_blocks]
        self.users_of = [np.flatnonzero(col).tolist() for col in mem.T]
        self.block_bytes_list = self.block_bytes.tolist()
        self.block_sets = [frozenset(b) for b in self.blocks_of]
        self.n_blocks_of = [len(b) for b in self.blocks_of]
        self.exact_sums = exact_sums(self.block_bytes)

    @property
    def sharing(self) -> bool:
        """Whether any block is used by more than one model."""
        return bool((self.block_users > 1).any())

    def without_sharing(self) -> Catalog:
        """The same models with every model stored whole (one private block each)."""
        names = self.names
        blocks = [[f"{n}/whole"] for n in names]
        sizes = {f"{n}/whole": float(s) for n, s in zip(names, self.model_bytes, strict=True)}
        return Catalog(names, blocks, sizes, kinds=self.kinds, families=self.families)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (the format :func:`load_catalog` reads)."""
        return {
            "blocks": {
                n: float(s) for n, s in zip(self.block_names, self.block_bytes, strict=True)
            },
            "models": [
                {
                    "name": n,
                    "kind": self.kinds[m],
                    "family": self.families[m],
                    "blocks": [self.block_names[b] for b in self.model_blocks[m]],
                }
                for m, n in enumerate(self.names)
            ],
        }

    def describe(self) -> list[dict[str, Any]]:
        """One row per model: name, kind, family, bytes, shared fraction."""
        return [
            {
                "model": n,
                "kind": self.kinds[m],
                "family": self.families[m],
                "bytes": float(self.model_bytes[m]),
                "shared_fraction": float(self.shared_fraction[m]),
            }
            for m, n in enumerate(self.names)
        ]


def exact_sums(sizes: np.ndarray) -> bool:
    """Whether every sum of a subset of ``sizes`` is exact in float64: all sizes are
    multiples of one power of two ``2**-k`` and their total is below ``2**53 * 2**-k``.

    Then sums and differences of sizes come out the same in any order (a generated
    catalog's sizes are parameter counts times 4, 2, 1, 1/2, 9/16 or 17/16 bytes), so the
    cache state can be updated block by block and still give the bits of a full product."""
    k = 0
    for v in sizes.tolist():
        den = v.as_integer_ratio()[1]  # a power of two
        k = max(k, den.bit_length() - 1)
    if k > 64:
        return False
    total = sum(int(v * 2**k) for v in sizes.tolist())  # exact: v * 2**k is an integer
    return total < 2**53


def _group_name(raw: list[str]) -> str:
    return raw[0] if len(raw) == 1 else f"{raw[0]}+{len(raw) - 1}"


def catalog_from_dict(doc: Any, *, where: str = "catalog") -> Catalog:
    """Build a catalog from ``{"blocks": {name: bytes}, "models": [{"name", "blocks",
    "kind"?, "family"?}]}``.

    Raises:
        ValueError: naming the entry and field that is wrong.
    """
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: expected a mapping with keys 'blocks' and 'models'")
    unknown = sorted(set(doc) - {"blocks", "models"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: ['blocks', 'models']")
    blocks = doc.get("blocks")
    models = doc.get("models")
    if not isinstance(blocks, Mapping) or not blocks:
        raise ValueError(f"{where}: 'blocks' must be a non-empty mapping of block name -> bytes")
    if not isinstance(models, list) or not models:
        raise ValueError(f"{where}: 'models' must be a non-empty list")
    names, blists, kinds, fams = [], [], [], []
    for i, entry in enumerate(models):
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: models[{i}] must be a mapping")
        bad = sorted(set(entry) - {"name", "blocks", "kind", "family"})
        if bad:
            raise ValueError(
                f"{where}: models[{i}] unknown key(s) {bad}; allowed: "
                "['blocks', 'family', 'kind', 'name']"
            )
        if not isinstance(entry.get("name"), str):
            raise ValueError(f"{where}: models[{i}].name={entry.get('name')!r}: must be a string")
        bl = entry.get("blocks")
        if not isinstance(bl, list):
            raise ValueError(f"{where}: models[{i}].blocks={bl!r}: must be a list of block names")
        names.append(entry["name"])
        blists.append([str(b) for b in bl])
        kinds.append(entry.get("kind", "custom"))
        fams.append(str(entry.get("family", entry["name"])))
    return Catalog(names, blists, dict(blocks), kinds=kinds, families=fams, where=where)


def random_tiny_catalog(
    rng: np.random.Generator, *, unit: bool = False
) -> tuple[dict[str, Any], float]:
    """A random tiny catalog document and a capacity [bytes] for oracle checks.

    ``unit=True``: 3-5 models of one unit-size block each, nothing shared, capacity 1..M-1
    (Belady's setting). Otherwise 3-6 blocks of sizes 1-4 and 3-5 models of 1-3 blocks each
    (so blocks are shared), capacity between the biggest model and 0.8 of the unique bytes.
    Returns ``(doc, capacity)``; ``doc`` is what :func:`catalog_from_dict` reads.
    """
    if unit:
        n_models = int(rng.integers(3, 6))
        sizes = {f"b{i}": 1.0 for i in range(n_models)}
        models = [[f"b{i}"] for i in range(n_models)]
        capacity = float(rng.integers(1, n_models))
    else:
        n_blocks = int(rng.integers(3, 7))
        sizes = {f"b{i}": float(rng.integers(1, 5)) for i in range(n_blocks)}
        n_models = int(rng.integers(3, 6))
        models = []
        for _ in range(n_models):
            k = int(rng.integers(1, min(3, n_blocks) + 1))
            chosen = sorted(rng.choice(n_blocks, size=k, replace=False))
            models.append([f"b{i}" for i in chosen])
        used = sorted({b for m in models for b in m})
        sizes = {b: sizes[b] for b in used}
        biggest = max(sum(sizes[b] for b in m) for m in models)
        capacity = float(rng.uniform(biggest, max(biggest, 0.8 * sum(sizes.values()))))
    doc = {
        "blocks": sizes,
        "models": [{"name": f"m{i}", "blocks": b} for i, b in enumerate(models)],
    }
    return doc, capacity


def load_catalog(path: str | Path) -> Catalog:
    """Read a catalog JSON file (format of :func:`catalog_from_dict`)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return catalog_from_dict(doc, where=str(path))


def parse_targets(spec: str) -> tuple[str, ...]:
    """``"q,v"`` -> ``("q", "v")``; ``"all_linear"`` stays one name."""
    return tuple(t.strip() for t in spec.split(",") if t.strip())


def build_catalog(
    bases: Iterable[str],
    *,
    base_precision: str = "fp16",
    lora_ranks: Iterable[int] = (),
    lora_targets: Iterable[str] = ("q,v",),
    adapter_precision: str = "fp16",
    partial_top_layers: Iterable[int] = (),
    quant_precisions: Iterable[str] = (),
) -> Catalog:
    """A catalog of foundation models and their derived models, sized by the cost tables.

    Per base (a model of :mod:`mei_envs.llm.catalog`, or an architecture JSON path):

    * the base itself at ``base_precision``: blocks ``embed`` (token/position embedding and
      final norm), ``L0..L{n-1}`` and ``head`` (LM head; 0 extra bytes beyond its bias when
      tied, so it is left out then): ``costs.weight_bytes``;
    * one LoRA child per (rank, targets): the base's blocks plus an adapter of
      ``costs.lora_params(rank, targets)`` parameters at ``adapter_precision``;
    * one partial fine-tune per k in ``partial_top_layers``: own copies of the top k layers,
      the rest shared (embedding and head frozen);
    * one quantised variant per precision: every block its own.
    """
    lora_ranks = list(lora_ranks)
    lora_targets = list(lora_targets)
    names: list[str] = []
    blists: list[list[str]] = []
    kinds: list[str] = []
    fams: list[str] = []
    sizes: dict[str, float] = {}
    ab = costs.bytes_per_element(adapter_precision)
    for base in bases:
        a = llm_catalog.get_architecture(base)
        bname = a.name
        if bname in fams:
            raise ValueError(f"bases: {bname!r} is listed twice")
        L = a.n_layers

        def whole(prec: str, a=a, bname=bname, L=L) -> list[str]:
            emb = costs.weight_bytes(a, prec, layers=(0, 0), include_embedding=True)
            both = costs.weight_bytes(
                a, prec, layers=(0, 0), include_embedding=True, include_lm_head=True
            )
            layer = costs.weight_bytes(a, prec, layers=(0, 1))
            out = [f"{bname}/{prec}/embed"]
            sizes[out[0]] = emb
            for i in range(L):
                sizes[f"{bname}/{prec}/L{i}"] = layer
                out.append(f"{bname}/{prec}/L{i}")
            if both - emb > 0:
                sizes[f"{bname}/{prec}/head"] = both - emb
                out.append(f"{bname}/{prec}/head")
            return out

        base_blocks = whole(base_precision)
        names.append(f"{bname}")
        blists.append(base_blocks)
        kinds.append("base")
        fams.append(bname)
        for r in lora_ranks:
            for t in lora_targets:
                targets = parse_targets(t)
                n_params = costs.lora_params(a, int(r), targets)
                tag = "all" if targets == ("all_linear",) else "".join(targets)
                name = f"{bname}+lora-r{int(r)}-{tag}"
                sizes[f"{name}/adapter"] = n_params * ab
                names.append(name)
                blists.append([*base_blocks, f"{name}/adapter"])
                kinds.append("lora")
                fams.append(bname)
        layer_blocks = [b for b in base_blocks if "/L" in b]
        other = [b for b in base_blocks if "/L" not in b]
        for k in partial_top_layers:
            k = int(k)
            if not 1 <= k <= L:
                raise ValueError(f"partial_top_layers: k={k} must be in [1, {L}] for {bname!r}")
            name = f"{bname}+ft-top{k}"
            own = []
            for i in range(L - k, L):
                own.append(f"{name}/L{i}")
                sizes[own[-1]] = sizes[layer_blocks[i]]
            names.append(name)
            blists.append([*other, *layer_blocks[: L - k], *own])
            kinds.append("partial")
            fams.append(bname)
        for prec in quant_precisions:
            if prec == base_precision:
                raise ValueError(
                    f"quant_precisions: {prec!r} equals base_precision; a quantised variant "
                    "must use another precision"
                )
            names.append(f"{bname}@{prec}")
            blists.append(whole(prec))
            kinds.append("quantised")
            fams.append(bname)
    return Catalog(names, blists, sizes, kinds=kinds, families=fams)


# ---- cache state -----------------------------------------------------------------------------
# Broadcastable transitions of the cache state: ``held`` is ``(B,)`` for one cache (CacheState,
# the single env, the oracles) or ``(n, B)`` for n caches (the native vector env). Sizes of a
# generated catalog are exact binary fractions (bytes per element 4, 2, 1, 1/2, 9/16, 17/16),
# so every sum below is exact and the one- and many-cache forms give the same bits.
def held_quantities(
    catalog: Catalog, held: np.ndarray, absent: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """``(cached, missing, refcount, used)`` for the blocks ``held`` (``(..., B)`` bool).

    ``cached`` ``(..., M)``: every block of the model held; ``missing`` ``(..., M)``: bytes of
    each model's blocks not held; ``refcount`` ``(..., B)``: cached models using each block
    (float); ``used``: bytes held (a float for one cache). ``absent``: optional float
    ``(B,)`` scratch buffer (one cache only).
    """
    if absent is None:
        absent = np.logical_not(held).astype(np.float64)
    else:
        np.logical_not(held, out=absent)
    M = catalog.n_models
    if held.ndim == 1:
        prod = catalog.count_and_bytes @ absent
        used: Any = float(np.dot(catalog.block_bytes, held))
    else:
        prod = absent @ catalog.count_and_bytes_t
        used = held @ catalog.block_bytes
    cached = prod[..., :M] == 0
    refcount = cached.astype(np.float64) @ catalog.member_f  # float @ float: BLAS
    return cached, prod[..., M:], refcount, used


def freed_bytes(
    catalog: Catalog,
    cached: np.ndarray,
    refcount: np.ndarray,
    pinned: Any = None,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """Bytes evicting each model frees (``(..., M)``; 0 for models not cached): its blocks no
    other cached model uses, except blocks of model ``pinned`` (the request being decided; an
    int, or an int array with one entry per cache, all >= 0)."""
    if scratch is None:
        free_able = (refcount == 1.0).astype(np.float64)
    else:
        free_able = np.equal(refcount, 1.0, out=scratch)  # 1.0 / 0.0
    if refcount.ndim == 1:
        if pinned is not None and pinned >= 0:
            free_able *= catalog.not_member_f[pinned]
        return np.where(cached, catalog.member_bytes @ free_able, 0.0)
    if pinned is not None:
        free_able *= catalog.not_member_f[pinned]
    return np.where(cached, free_able @ catalog.member_bytes_t, 0.0)


def eviction_drop(catalog: Catalog, refcount: np.ndarray, model: Any, pinned: Any) -> np.ndarray:
    """Blocks evicting cached ``model`` drops: its blocks no other cached model uses, except
    blocks of ``pinned`` (broadcast over caches like :func:`freed_bytes`; ``pinned`` None or
    < 0 for none, one cache only)."""
    drop = refcount == 1
    drop &= catalog.membership[model]
    if refcount.ndim > 1 or (pinned is not None and pinned >= 0):
        drop &= catalog.not_member[pinned]
    return drop


def fetch_delay_s(missing_bytes: Any, rtt_s: float, rate_bps: float) -> Any:
    """Cloud fetch delay of a request missing ``missing_bytes`` [s]: 0 on a hit, else one
    round trip plus the bytes over the backhaul. Floats or arrays."""
    if isinstance(missing_bytes, np.ndarray):
        return np.where(missing_bytes <= 0.0, 0.0, rtt_s + 8.0 * missing_bytes / rate_bps)
    return 0.0 if missing_bytes <= 0.0 else rtt_s + 8.0 * missing_bytes / rate_bps


class CacheState:
    """Blocks held at one edge server, with every model-level quantity derived from them.

    A model is cached when all its blocks are held (so caching a LoRA child also makes its
    base available). ``refcount[b]`` counts the cached models using block ``b``. Evicting a
    cached model frees its blocks that no other cached model uses, except blocks ``pinned``
    for the request being decided (they stay until it is admitted or bypassed; a bypass then
    drops held blocks no cached model uses). Outside a decision every held block has a
    cached user, and ``used_bytes`` = bytes of the held blocks <= ``capacity``.

    The state is updated block by block: an admission or eviction touches the blocks it
    toggles, their users, and the blocks of the models it caches or uncaches, so its cost
    does not grow with the catalog's square (the products of :func:`held_quantities` cost
    models x blocks per change). Its quantities equal those products' bit for bit when the
    catalog's sizes add exactly (:func:`exact_sums`: every generated catalog, and integer
    byte counts); otherwise the byte quantities are recomputed by the products after each
    change. :meth:`check` compares the two.

    ``held``, ``refcount``, ``cached`` and ``missing`` are new arrays on each read (the
    state itself is kept in Python lists); ``version`` grows on every change.
    """

    def __init__(self, catalog: Catalog, capacity_bytes: float) -> None:
        if not (math.isfinite(capacity_bytes) and capacity_bytes > 0):
            raise ValueError(f"capacity_bytes={capacity_bytes!r}: must be finite and > 0")
        self.catalog = catalog
        self.capacity = float(capacity_bytes)
        self.version = 0
        self.clear()

    def clear(self) -> None:
        c = self.catalog
        B, M = c.n_blocks, c.n_models
        # Python lists: the per-request path reads and writes single entries, which lists
        # do several times faster than numpy arrays.
        self._held = [False] * B
        self._ref = [0] * B  # cached models using each block
        self._owner = [0] * B  # the sum of their ids: the one user's id when _ref is 1
        self._orphans: set[int] = set()  # held blocks no cached model uses (pinned ones)
        self._nmiss = list(c.n_blocks_of)  # blocks each model misses
        self._miss = c.model_bytes.tolist()  # bytes each model misses
        self._cached = [False] * M
        # Bytes of each cached model's blocks no other cached model uses (0 if not cached).
        self._solo = [0.0] * M
        self.used_bytes = 0.0
        self._touched: list[int] | None = None  # see drain_touched (None: every model)
        self.version += 1

    def copy(self) -> CacheState:
        new = CacheState.__new__(CacheState)
        new.__dict__.update(self.__dict__)
        for k in ("_held", "_ref", "_owner", "_nmiss", "_miss", "_cached", "_solo"):
            setattr(new, k, list(getattr(self, k)))
        new._orphans = set(self._orphans)
        new._touched = None
        return new

    def drain_touched(self) -> list[int] | None:
        """Models whose ``cached`` or ``missing`` entry may have changed since the last
        call (with repeats; None: any model), and start a new list."""
        touched, self._touched = self._touched, []
        return touched

    @property
    def held(self) -> np.ndarray:
        """``(B,)`` bool: which blocks are held (a new array)."""
        return np.array(self._held, dtype=bool)

    @property
    def refcount(self) -> np.ndarray:
        """``(B,)`` cached models using each block, as float64 (a new array)."""
        return np.array(self._ref, dtype=np.float64)

    @property
    def cached(self) -> np.ndarray:
        """``(M,)`` bool: which models are cached (a new array)."""
        return np.array(self._cached, dtype=bool)

    @property
    def missing(self) -> np.ndarray:
        """``(M,)`` bytes each model misses now (a new array)."""
        return np.array(self._miss)

    # ---- queries ---------------------------------------------------------------------
    @property
    def free_bytes(self) -> float:
        return self.capacity - self.used_bytes

    def missing_bytes(self, model: int) -> float:
        """Bytes of ``model``'s blocks not held (what a request fetches over the backhaul)."""
        return self._miss[model]

    def missing_bytes_all(self) -> np.ndarray:
        """``(M,)`` bytes each model would fetch if requested now (a new array)."""
        return np.array(self._miss)

    def freed_bytes(self, pinned: int | None = None) -> np.ndarray:
        """``(M,)`` bytes evicting each model frees now (0 for models not cached; a new
        array). Blocks of model ``pinned`` (the request being decided) are never freed."""
        c = self.catalog
        if not c.exact_sums:
            return freed_bytes(c, self.cached, self.refcount, pinned)
        return np.fromiter(self.freed_list(pinned), np.float64, c.n_models)

    def freed_list(self, pinned: int | None = None) -> list[float]:
        """:meth:`freed_bytes` as a Python list (catalogs whose sizes add exactly)."""
        if pinned is None or pinned < 0:
            return list(self._solo)
        freed = list(self._solo)
        c = self.catalog
        ref, owner, bb = self._ref, self._owner, c.block_bytes_list
        for b in c.blocks_of[pinned]:
            if ref[b] == 1:  # its one cached user keeps it for the request
                freed[owner[b]] -= bb[b]
        return freed

    def fits(self, model: int) -> bool:
        """Whether ``model``'s missing blocks fit in the free space now."""
        return self.used_bytes + self._miss[model] <= self.capacity * (1 + 1e-12)

    # ---- changes ---------------------------------------------------------------------
    def admit(self, model: int) -> np.ndarray:
        """Hold all of ``model``'s blocks (caller checked :meth:`fits`); return a bool
        ``(M,)`` mask of the newly cached models (the model and any other whose blocks are
        now all held)."""
        new = np.zeros(self.catalog.n_models, dtype=bool)
        new[self.admit_ids(model)] = True
        return new

    def admit_ids(self, model: int) -> list[int]:
        """:meth:`admit`, returning the newly cached models' ids (ascending)."""
        c = self.catalog
        held, bb, users_of = self._held, c.block_bytes_list, c.users_of
        nmiss, miss = self._nmiss, self._miss
        used = self.used_bytes
        touched = self._touched
        new = []
        for b in c.blocks_of[model]:
            if held[b]:
                continue
            held[b] = True
            x = bb[b]
            used += x
            if touched is not None:
                touched += users_of[b]
            for u in users_of[b]:
                miss[u] -= x
                nmiss[u] -= 1
                if not nmiss[u]:
                    new.append(u)
        self.used_bytes = used
        new.sort()
        ref, owner, solo, cached = self._ref, self._owner, self._solo, self._cached
        orphans = self._orphans
        for u in new:
            cached[u] = True
            for b in c.blocks_of[u]:
                r = ref[b]
                if r == 0:
                    solo[u] += bb[b]
                    orphans.discard(b)
                elif r == 1:
                    solo[owner[b]] -= bb[b]  # no longer its own
                ref[b] = r + 1
                owner[b] += u
        self._changed()
        return new

    def evict(self, model: int, pinned: int | None = None) -> float:
        """Drop ``model``'s blocks no other cached model uses (keeping ``pinned``'s blocks);
        return the bytes freed."""
        c = self.catalog
        keep = c.block_sets[pinned] if pinned is not None and pinned >= 0 else ()
        ref = self._ref
        drop = [b for b in c.blocks_of[model] if ref[b] == 1 and b not in keep]
        if not drop:
            return 0.0
        before = self.used_bytes
        owner = self._owner
        owners = sorted({owner[b] for b in drop})
        self._drop(drop)
        cached, solo, bb = self._cached, self._solo, c.block_bytes_list
        held, orphans = self._held, self._orphans
        for o in owners:
            cached[o] = False
            solo[o] = 0.0
            for b in c.blocks_of[o]:
                r = ref[b] - 1
                ref[b] = r
                owner[b] -= o
                if r == 1:
                    solo[owner[b]] += bb[b]  # its one remaining user's own now
                elif r == 0 and held[b]:
                    orphans.add(b)  # pinned for the request
        self._changed()
        return before - self.used_bytes

    def drop_orphans(self) -> float:
        """Free held blocks no cached model uses (after a bypass); return bytes freed."""
        if not self._orphans:
            return 0.0
        before = self.used_bytes
        self._drop(sorted(self._orphans))
        self._orphans.clear()
        self._changed()
        return before - self.used_bytes

    def _drop(self, blocks: list[int]) -> None:
        held, c = self._held, self.catalog
        bb, users_of, nmiss, miss = c.block_bytes_list, c.users_of, self._nmiss, self._miss
        used = self.used_bytes
        touched = self._touched
        for b in blocks:
            held[b] = False
            x = bb[b]
            used -= x
            if touched is not None:
                touched += users_of[b]
            for u in users_of[b]:
                miss[u] += x
                nmiss[u] += 1
        self.used_bytes = used

    def _changed(self) -> None:
        self.version += 1
        if not self.catalog.exact_sums:
            # Sizes that do not add exactly: the byte quantities from the full products.
            _, missing, _, self.used_bytes = held_quantities(self.catalog, self.held)
            self._miss = missing.tolist()
            self._touched = None

    def check(self) -> None:
        """Raise ValueError if an invariant is broken (the property tests call it)."""
        c = self.catalog
        held = self.held
        used = float(c.block_bytes @ held)
        if not math.isclose(used, self.used_bytes, rel_tol=1e-9, abs_tol=1e-6):
            raise ValueError(f"used_bytes={self.used_bytes} != bytes of held blocks {used}")
        if used > self.capacity * (1 + 1e-9):
            raise ValueError(f"used_bytes={used} exceeds capacity={self.capacity}")
        cached = (c.member_f @ ~held) == 0
        if not np.array_equal(cached, self.cached):
            raise ValueError("cached models disagree with the held blocks")
        refcount = cached.astype(np.int64) @ c.membership
        if not np.array_equal(self.refcount, refcount):
            raise ValueError("reference counts disagree with the cached models")
        if not np.allclose(self.missing, c.member_bytes @ ~held, rtol=1e-12, atol=1e-6):
            raise ValueError("missing bytes disagree with the held blocks")
        if self._orphans != set(np.flatnonzero(held & (refcount == 0)).tolist()):
            raise ValueError("the orphan set disagrees with the held blocks")
        # The block-by-block state against the full products (bit for bit when sums are
        # exact; otherwise the byte quantities come from the products themselves).
        p_cached, p_missing, p_ref, p_used = held_quantities(c, held)
        if not (
            np.array_equal(p_cached, self.cached)
            and np.array_equal(p_ref, self.refcount)
            and np.array_equal(p_missing, self.missing)
            and p_used == self.used_bytes
        ):
            raise ValueError("the state differs from held_quantities' products")
        for pinned in (None, *range(c.n_models)):
            want = freed_bytes(c, p_cached, p_ref, pinned)
            if not np.array_equal(self.freed_bytes(pinned), want):
                raise ValueError(f"freed bytes (pinned={pinned}) differ from freed_bytes'")


# ---- requests --------------------------------------------------------------------------------
def zipf_probabilities(n: int, exponent: float) -> np.ndarray:
    """Zipf popularity of ranks 1..n: ``p_r ∝ r^-exponent``."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -float(exponent)
    return p / p.sum()


def _rank_buckets(cdf: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """A bucket look-up for ``searchsorted(cdf, u, side="right")``, u in [0, 1): the unit
    interval cut into ``K`` (a power of two) equal buckets, each holding at most one of the
    values ``cdf[:-1]``. Returns ``(K, base, bound)``: ``base[k]`` counts the cdf values below
    bucket ``k``, ``bound[k]`` is ``K`` times the value inside it (2K if none), so the rank of
    ``u`` in bucket ``k = floor(K u)`` is ``base[k] + (bound[k] <= K u)`` (exact: scaling by a
    power of two rounds nothing). None if no ``K <= 2**16`` separates the values."""
    inner = cdf[:-1]
    for bits in range(6, 17):
        K = float(1 << bits)
        if len(inner) > K:
            continue
        kb = np.floor(inner * K).astype(np.intp)
        if kb.size and ((np.diff(kb) <= 0).any() or kb[-1] >= K):
            continue
        base = np.searchsorted(inner * K, np.arange(1 << bits), side="left")
        bound = np.full(1 << bits, 2.0 * K)
        bound[kb] = inner * K
        base.flags.writeable = False
        bound.flags.writeable = False
        return K, base, bound
    return None


class ZipfDriftRequests:
    """Zipf popularity over models whose ranking drifts, optionally cycling through regimes.

    At reset a random permutation assigns models to ranks. Before each request, with
    probability ``drift_rate``, the ranks of two distinct uniformly drawn models are swapped
    (so the expected number of rank swaps per request is ``drift_rate``); the request's rank
    is drawn from Zipf(``exponent``) and mapped to the model holding that rank.

    Periodic demand (``phase_count > 1``): popularity cycles through ``phase_count``
    regimes, each with its own rank permutation drawn at reset; request ``t`` is drawn under
    regime :meth:`regime` ``(t) = (t // phase_length) % phase_count``, so the same regime
    comes back every ``phase_count * phase_length`` requests (a day of a diurnal pattern).
    A drift swap drawn at request ``t`` applies to the regime in force at ``t`` only: each
    regime's ranking changes only while it is active and is found again as it was left.
    With ``phase_count == 1`` the draws are exactly those of the unphased sampler; with more
    regimes the extra permutations are drawn after all of its draws, so the first
    ``phase_length`` requests are the unphased sampler's.
    """

    def __init__(
        self,
        n_models: int,
        exponent: float,
        drift_rate: float,
        phase_count: int = 1,
        phase_length: int = 1,
    ) -> None:
        self.n_models = int(n_models)
        self.exponent = float(exponent)
        self.drift_rate = float(drift_rate)
        self.phase_count = int(phase_count)
        self.phase_length = int(phase_length)
        if self.phase_count < 1 or self.phase_length < 1:
            raise ValueError(
                f"ZipfDriftRequests: phase_count={phase_count!r}, phase_length="
                f"{phase_length!r}: both must be integers >= 1"
            )
        self.cdf = np.cumsum(zipf_probabilities(self.n_models, self.exponent))
        self.cdf[-1] = 1.0
        self._buckets = _rank_buckets(self.cdf)

    def regime(self, t: Any) -> Any:
        """Index of the popularity regime in force at request index ``t`` (broadcasts)."""
        return (t // self.phase_length) % self.phase_count

    def sample(self, rng: np.random.Generator, n_requests: int) -> np.ndarray:
        """``n_requests`` model ids (int64), drawn from ``rng`` in a fixed order."""
        M, n = self.n_models, int(n_requests)
        perm = rng.permutation(M)
        if M > 1:  # the ranks' and the swaps' uniforms in one call: the same doubles
            u = rng.random(2 * n)
            swapped = u[n:] < self.drift_rate
            events = np.flatnonzero(swapped)
            ranks = self.ranks(u[:n])
        else:
            ranks = self.ranks(rng.random(n))
            events = np.empty(0, int)
        a = rng.integers(0, M, size=events.size)
        b = (a + 1 + rng.integers(0, max(M - 1, 1), size=events.size)) % M
        if self.phase_count > 1:
            return self.phased_schedule(rng, perm, ranks, events, a, b)[0]
        if events.size == 0:
            return perm[ranks]
        out = np.empty(n, dtype=np.int64)
        start = 0
        pos = [0] * M  # rank of each model
        for r, m in enumerate(perm.tolist()):
            pos[m] = r
        for t, ak, bk in zip(events.tolist(), a.tolist(), b.tolist(), strict=True):
            out[start:t] = perm[ranks[start:t]]
            ra, rb = pos[ak], pos[bk]
            perm[ra], perm[rb] = bk, ak
            pos[ak], pos[bk] = rb, ra
            start = t
        out[start:] = perm[ranks[start:]]
        return out

    def ranks(self, u: np.ndarray) -> np.ndarray:
        """Zipf ranks of uniform draws ``u`` in [0, 1): ``searchsorted(cdf, u, "right")``
        (at most ``M - 1``, as ``cdf[-1] = 1 > u``), by a bucket look-up when the catalog's
        cdf allows it (the same integers; ``u`` is overwritten)."""
        if self._buckets is None:
            return np.searchsorted(self.cdf, u, side="right")
        scale, base, bound = self._buckets
        u *= scale  # exact: a power of two
        k = u.astype(np.intp)  # the bucket of each draw: floor(u * scale)
        ranks = base.take(k)
        ranks += bound.take(k) <= u
        return ranks

    def phased_schedule(
        self,
        rng: np.random.Generator,
        perm0: np.ndarray,
        ranks: np.ndarray,
        events: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The phased walk behind :meth:`sample`, given its first draws (regime 0's
        permutation, the Zipf ranks, the swap times and pairs); draws the other regimes'
        permutations from ``rng``.

        Returns ``(requests, times, perms)``: ``times[0] = 0`` and then every request index
        at which the popularity changes (a regime switch or a rank swap, before that
        request is drawn), and ``perms[i]`` (``perms[i][rank] = model``), the ranking in
        force from ``times[i]`` until the next change. The popularity oracles
        (``mei_envs.baselines.edge_llm_cache_popularity``) replay it.
        """
        M, n, L = self.n_models, len(ranks), self.phase_length
        cur = np.empty((self.phase_count, M), dtype=np.int64)
        cur[0] = perm0
        for k in range(1, self.phase_count):
            cur[k] = rng.permutation(M)
        pos = np.empty_like(cur)  # pos[k, model] = rank of the model in regime k
        for k in range(self.phase_count):
            pos[k, cur[k]] = np.arange(M)
        swap = dict(zip(events.tolist(), zip(a.tolist(), b.tolist(), strict=True), strict=True))
        cuts = sorted(set(swap) | set(range(L, n, L)))
        out = np.empty(n, dtype=np.int64)
        times, rows = [0], [cur[0].copy()]
        start, k = 0, 0
        for t in cuts:
            out[start:t] = cur[k][ranks[start:t]]
            k = int(self.regime(t))
            if t in swap:
                ak, bk = swap[t]
                ra, rb = pos[k, ak], pos[k, bk]
                cur[k, ra], cur[k, rb] = bk, ak
                pos[k, ak], pos[k, bk] = rb, ra
            start = t
            times.append(t)
            rows.append(cur[k].copy())
        out[start:] = cur[k][ranks[start:]]
        return out, np.asarray(times, dtype=np.int64), np.asarray(rows, dtype=np.int64)


def load_trace(path: str | Path, names: Sequence[str]) -> np.ndarray:
    """Read a request trace: a CSV with one model per row (name or integer id), optionally
    under a header ``model``; blank lines and lines starting with ``#`` are skipped.

    Raises:
        ValueError: naming the file, the line number and the bad value.
    """
    path = Path(path)
    index = {n: i for i, n in enumerate(names)}
    M = len(names)
    out: list[int] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 1:
                raise ValueError(
                    f"{path}:{lineno}: expected one column (a model name or id), got {row!r}"
                )
            value = row[0].strip()
            if lineno == 1 and value.lower() == "model":
                continue
            if value in index:
                out.append(index[value])
                continue
            try:
                mid = int(value)
            except ValueError:
                raise ValueError(
                    f"{path}:{lineno}: unknown model {value!r}; use a catalog name "
                    f"(e.g. {names[0]!r}) or an id in [0, {M - 1}]"
                ) from None
            if not 0 <= mid < M:
                raise ValueError(f"{path}:{lineno}: model id {mid} out of range [0, {M - 1}]")
            out.append(mid)
    if not out:
        raise ValueError(f"{path}: holds no requests")
    return np.asarray(out, dtype=np.int64)


def next_use(requests: np.ndarray, n_models: int) -> np.ndarray:
    """``nxt[t]`` = the next index after ``t`` at which ``requests[t]`` is requested again
    (``len(requests)`` if never): what Belady-style oracles read."""
    n = len(requests)
    nxt = np.full(n, n, dtype=np.int64)
    last = np.full(n_models, n, dtype=np.int64)
    for t in range(n - 1, -1, -1):
        m = requests[t]
        nxt[t] = last[m]
        last[m] = t
    return nxt


class RequestStats:
    """What an online cache knows about past requests, per model.

    ``last[m]``: index of the last request of ``m`` (-1: never); ``count[m]``: requests so far;
    ``since[m]``: index at which ``m`` last became cached (-1: not cached). Exponential moving
    averages of the request indicator with half-lives ``half_lives`` [requests] are kept
    lazily: only the requested model is touched per request (:meth:`ema` decays all models
    when asked).
    """

    def __init__(self, n_models: int, half_lives: Sequence[float], *, pad_rows: int = 0) -> None:
        self.n_models = int(n_models)
        self.decay = [0.5 ** (1.0 / float(h)) for h in half_lives]
        self._one_minus = [1.0 - d for d in self.decay]
        self._decay_arr = np.asarray(self.decay)[:, None]
        # The averages are rows pad_rows.. of one array whose first pad_rows rows are 1.0, so
        # a caller can scale [1, ..., 1, averages] by one product (the env's observation).
        self.pad_rows = int(pad_rows)
        self._padded = np.ones((self.pad_rows + len(self.decay), self.n_models))
        self._ema = self._padded[self.pad_rows :]
        self.clear()

    def clear(self) -> None:
        M = self.n_models
        # Row 0: last request index; row 1: index at which the model became cached.
        self.marks = np.full((2, M), -1, dtype=np.int64)
        self._count = [0] * M  # lists: the per-request path touches single entries
        self._ema[:] = 0.0
        self._ema_l = [[0.0] * M for _ in self.decay]  # the averages' values, read per request
        self._ema_t_l = [0] * M  # request index of each average's last update

    def copy(self) -> RequestStats:
        new = RequestStats.__new__(RequestStats)
        new.__dict__.update(self.__dict__)
        for k in ("marks", "_count", "_padded", "_ema_t_l"):
            setattr(new, k, getattr(self, k).copy())
        new._ema_l = [row.copy() for row in self._ema_l]
        new._ema = new._padded[new.pad_rows :]
        return new

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickle copies views as separate arrays: make the averages a view again.
        self.__dict__.update(state)
        self._ema = self._padded[self.pad_rows :]

    @property
    def count(self) -> np.ndarray:
        """Requests of each model so far (a new int64 array)."""
        return np.array(self._count, dtype=np.int64)

    @property
    def ema_times(self) -> np.ndarray:
        """Request index of each model's last moving-average update (a new array)."""
        return np.array(self._ema_t_l, dtype=np.int64)

    @property
    def last(self) -> np.ndarray:
        """Index of each model's last request (-1: never); a view."""
        return self.marks[0]

    @property
    def since(self) -> np.ndarray:
        """Index at which each model last became cached (-1: not cached); a view."""
        return self.marks[1]

    def record(self, model: int, t: int) -> None:
        """Request ``t`` asked for ``model``."""
        et = self._ema_t_l
        gap = t - et[model]
        et[model] = t
        e = self._ema
        # The values are read from Python lists (a numpy element read costs more than the
        # arithmetic) and written to both.
        for i, (d, row) in enumerate(zip(self.decay, self._ema_l, strict=True)):
            v = row[model] * d**gap + self._one_minus[i]
            row[model] = v
            e[i, model] = v
        self.marks[0, model] = t
        self._count[model] += 1

    def ema(self, t: int) -> np.ndarray:
        """``(S, M)`` moving averages of the request indicator after request ``t``."""
        return self._ema * self._decay_arr ** (t - self.ema_times)[None, :]
