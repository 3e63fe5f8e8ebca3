"""How many units of each stratum go to each split (pure: no Beam, no Arrow).

`allocate` rounds the quotas so that each stratum's count per split is the floor or the
ceiling of its quota and the split totals are the largest-remainder rounding of
N × fraction (matrix rounding, solved as a small flow problem over strata × splits);
`plan_split` adds the rank of every cut and the hash band it lies in. With sticky
splits, the units kept from an earlier run are given, and `fill_quota` allocates the new
ones: the cuts are then ranks among the new units only (the plan's `pool`).
"""

import json
import math
from collections import deque
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

OTHER = "<other>"
_TWO64 = float(2 ** 64)
BAND_SIGMAS = 10.0


def _exact(fractions: Sequence[float]) -> List[Fraction]:
    return [Fraction(f).limit_denominator(10 ** 9) for f in fractions]


def largest_remainder(n: int, fractions: Sequence[float]) -> List[int]:
    """Integer counts summing to n, each the floor or ceiling of n·f (Hamilton's method).

    Ties in the remainder go to the split listed first.
    """
    quotas = [n * f for f in _exact(fractions)]
    counts = [math.floor(q) for q in quotas]
    short = n - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda j: (-(quotas[j] - counts[j]), j))
    for j in by_remainder[:short]:
        counts[j] += 1
    return counts


def allocate(strata: Dict[str, int], fractions: Sequence[float]) -> Dict[str, List[int]]:
    """Per-stratum split counts: each within 1 of its quota, rows exact, split totals exact.

    Returns {stratum: [count per split]} in the order of `fractions`.
    """
    fr = _exact(fractions)
    keys = sorted(strata)
    quotas = {s: [strata[s] * f for f in fr] for s in keys}
    base = {s: [math.floor(q) for q in quotas[s]] for s in keys}
    extra = {s: strata[s] - sum(base[s]) for s in keys}
    total = sum(strata.values())
    targets = largest_remainder(total, fractions)
    capacity = [targets[j] - sum(base[s][j] for s in keys) for j in range(len(fr))]

    # Candidate (stratum, split) cells: those with a fractional quota, best remainder first.
    cands = {s: sorted((j for j in range(len(fr)) if quotas[s][j] != base[s][j]),
                       key=lambda j, s=s: (-(quotas[s][j] - base[s][j]), j)) for s in keys}
    used = {s: set() for s in keys}
    load = [0] * len(fr)
    for s in keys:  # greedy: Hamilton within the stratum while split capacity lasts
        for j in cands[s]:
            if len(used[s]) == extra[s]:
                break
            if load[j] < capacity[j]:
                used[s].add(j)
                load[j] += 1
    for s in keys:  # repair by augmenting paths until every stratum is whole
        while len(used[s]) < extra[s]:
            if not _augment(s, cands, used, load, capacity):
                # The exact split totals cannot be met together with the per-stratum bounds:
                # let each split take one more (totals stay within 1 of their quota).
                capacity = [c + 1 for c in capacity]
    return {s: [base[s][j] + (1 if j in used[s] else 0) for j in range(len(fr))] for s in keys}


def _augment(start: str, cands, used, load, capacity) -> bool:
    """One augmenting path from stratum `start` to a split with spare capacity."""
    parent: Dict[Tuple[str, object], Optional[Tuple[str, object]]] = {("s", start): None}
    queue = deque([("s", start)])
    holders: Dict[int, List[str]] = {}
    for s, js in used.items():
        for j in js:
            holders.setdefault(j, []).append(s)
    while queue:
        kind, node = queue.popleft()
        if kind == "s":
            for j in cands[node]:
                if j in used[node] or ("j", j) in parent:
                    continue
                parent[("j", j)] = (kind, node)
                if load[j] < capacity[j]:
                    _flip(("j", j), parent, used, load)
                    return True
                queue.append(("j", j))
        else:
            for s in sorted(holders.get(node, [])):
                if ("s", s) not in parent:
                    parent[("s", s)] = (kind, node)
                    queue.append(("s", s))
    return False


def _flip(end, parent, used, load) -> None:
    load[end[1]] += 1
    node = end
    while parent[node] is not None:
        prev = parent[node]
        if prev[0] == "s":       # stratum → split: take the cell
            used[prev[1]].add(node[1])
        else:                    # split → stratum: give the cell back
            used[node[1]].discard(prev[1])
        node = prev


def fill_quota(targets: Sequence[int], kept: Sequence[int], pool: int) -> List[int]:
    """How many new units each split of one stratum gets, when `kept[j]` units stay in split
    j and `pool` new ones are to be placed (sum(targets) == sum(kept) + pool).

    Each split is short of its target by d_j = max(0, targets[j] - kept[j]). When no split
    holds more than its target, the d_j add up to `pool` and every target is met exactly.
    Otherwise (labels changed, so a stratum's kept units overfill a split) the deficits add
    up to more than the pool: the pool goes where the deficit is largest (water-filling:
    each short split is filled to the same remaining deficit L, the smallest the pool
    allows; the units left over, fewer than the splits at L, go one each in config order).
    That minimises the largest shortfall; the total deviation, twice the overfill, cannot
    be smaller, since no kept unit moves.
    """
    if len(targets) != len(kept):
        raise ValueError("targets and kept differ in length")
    deficit = [max(0, t - k) for t, k in zip(targets, kept)]
    if sum(deficit) <= pool:
        out = list(deficit)
        out[0] += pool - sum(deficit)   # only when the counts do not add up; never with a consistent plan
        return out
    lo, hi = 0, max(deficit)           # the smallest level L with sum(max(0, d - L)) <= pool
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(max(0, d - mid) for d in deficit) <= pool:
            hi = mid
        else:
            lo = mid + 1
    out = [max(0, d - lo) for d in deficit]
    left = pool - sum(out)
    for j, d in enumerate(deficit):
        if left == 0:
            break
        if lo > 0 and d >= lo:
            out[j] += 1
            left -= 1
    return out


def kept_key(split_index: int, stratum: str) -> str:
    """The key under which units kept in a split are counted: "<split index>\t<stratum>"."""
    return f"{split_index}\t{stratum}"


# ---- thresholds (pure) ----------------------------------------------------------------------

def band(k: int, n: int) -> Tuple[int, int]:
    """A hash interval [lo, hi] that holds the k-th smallest of n uniform 64-bit hashes."""
    p = k / n
    width = BAND_SIGMAS * math.sqrt(max(p * (1 - p), 1.0 / n) / n) + 2.0 / n
    lo = max(0.0, (p - width) * _TWO64)
    hi = min(_TWO64 - 1, (p + width) * _TWO64)
    lo_i = 0 if lo <= 0 else int(lo)
    hi_i = 2 ** 64 - 1 if hi >= _TWO64 - 1 else int(hi)
    return lo_i, hi_i


def merge_small_strata(counts: Dict[str, int], min_size: int) -> Dict[str, str]:
    """{stratum: stratum it is allocated as}. A multi-column stratum with fewer than
    `min_size` units joins the "<other>" stratum of its first column's value (its label);
    single-column strata are never merged (they are the label itself)."""
    mapping = {}
    for key, n in counts.items():
        if n < min_size and key.startswith("["):
            first = json.loads(key)[0]
            mapping[key] = json.dumps([first, OTHER])
        else:
            mapping[key] = key
    return mapping


def plan_split(counts: Dict[str, int], fractions: Sequence[float], merge_below: int = 0,
               kept: Optional[Dict[str, int]] = None) -> Dict:
    """Targets and cut ranks per stratum, with the search band of each cut.

    Strata smaller than `merge_below` are merged first (`merge_small_strata`); the plan
    keeps the mapping so rows are looked up by their own stratum key.

    `kept` (sticky splits): {`kept_key(split, stratum)`: units} that stay where an earlier
    run put them. The targets are still those of `allocate`; the new units of a stratum
    (its `pool`) are allocated by `fill_quota`, and the cuts are ranks among them. The
    plan then also has `kept` and `new`, per stratum and split.
    """
    mapping = merge_small_strata(counts, merge_below)
    merged: Dict[str, int] = {}
    for key, n in counts.items():
        merged[mapping[key]] = merged.get(mapping[key], 0) + n
    counts = merged
    targets = allocate(counts, fractions)
    strata = sorted(counts)
    kept_by = {s: [0] * len(fractions) for s in strata}
    for key, n in (kept or {}).items():
        j, stratum = key.split("\t", 1)
        kept_by[mapping.get(stratum, stratum)][int(j)] += n
    pool = {s: counts[s] - sum(kept_by[s]) for s in strata}
    new = {s: fill_quota(targets[s], kept_by[s], pool[s]) for s in strata} if kept is not None else targets
    cuts, bands = [], []
    for s in strata:
        ranks = list(np.cumsum(new[s])[:-1])
        cuts.append([int(k) for k in ranks])
        bands.append([band(int(k), pool[s]) if 0 < k < pool[s] else (0, 0) for k in ranks])
    position = {s: i for i, s in enumerate(strata)}
    plan = {"strata": strata, "counts": [counts[s] for s in strata], "targets": [targets[s] for s in strata],
            "pool": [pool[s] for s in strata], "cuts": cuts, "bands": bands,
            "index": {k: position[v] for k, v in mapping.items()},
            "merged": {k: v for k, v in sorted(mapping.items()) if k != v}}
    if kept is not None:
        plan["kept"] = [kept_by[s] for s in strata]
        plan["new"] = [new[s] for s in strata]
    return plan
