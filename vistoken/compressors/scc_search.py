"""The tau search of SCC's retention mode, and what makes it fast.

``vt.compress(x, "scc", retention=r)`` needs the tau whose component count is at least the
budget K and close to it. :func:`search_tau` brackets tau and calls a counter at every
step; in exact mode the counter is :class:`SearchCounter`, which gives the structure
``scc_structure`` builds at that tau, bit for bit, with less work:

- the per-frame similarities (T, N, N) are computed once (:func:`frame_similarities`);
  one maximum spanning forest per frame (single linkage, :class:`_SpatialForest`) then
  gives the spatial step at any tau as a propagation over T*(N-1) tree edges, and the
  spatial count M1(tau) for every tau at once;
- the search aims with that exact M1(tau) (:func:`_aim`): only the fraction M2 / M1 kept
  by the temporal step is interpolated between the bracket's ends, so it lands within the
  settling band in a few steps; below the largest tau where M1 is under the budget the
  count is too, a lower end known before any step, so the first step's pairs are kept;
- the temporal similarities of the spatial representatives are kept above the bracket's
  lower end (:class:`_RepPairs`, representatives identified across taus by their
  smallest member and size): a step computes only the pairs of its own representatives
  that no earlier step had (its new ones, and seen ones never present at one step), and
  a step computes only its count: the means of the structure used are computed once, at
  the end (:class:`_LazyStructure`), and only representatives not seen before are
  averaged and normalised;
- where no spatial tree weight lies inside the bracket the partition is fixed and the
  count, monotone there, is read at every temporal event from the cache without a pass
  (:func:`_within`): a count that jumps across the settling band ends the search at once.

Search state lives in the counter object (one per call), never in module globals.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..ops import hub_order, normalize, row_block, segment_count, segment_mean, segment_sum
from ..ops.components import count_true, edge_components, spanning_forest
from ..ops.similarity import BLOCK_ELEMENTS
from .scc import SCCStructure, spatial_step, temporal_components

__all__ = ["PassCounter", "SearchCounter", "frame_similarities", "search_tau"]

# Bisection of the tau search: at most this many steps, and never finer than the float32
# resolution of a cosine near 1 (6e-8): two taus closer than that select the same edges.
_SEARCH_STEPS = 40
_SEARCH_TOL = 5e-8


def frame_similarities(xn: Tensor) -> Tensor | None:
    """(T, N, N) per-frame cosine similarities, computed with the same batched matmuls as
    ``spatial_step`` (so thresholding them gives its adjacency bit for bit), or None when
    they exceed BLOCK_ELEMENTS."""
    t, n, _ = xn.shape
    if t * n * n > BLOCK_ELEMENTS:
        return None
    chunk = max(1, BLOCK_ELEMENTS // (n * n))
    return torch.cat([torch.bmm(xs, xs.transpose(1, 2)) for xs in xn.split(chunk)])


# The tau search reuses the token-pair similarities above its bracket's lower end when
# they fit in this many pairs (12 bytes each); above it every step recomputes.
_PAIR_CACHE_LIMIT = 1 << 22
# Matmuls of the search keep at least this many rows, so that the BLAS takes the same
# kernel as the full-size tiles of BlockGraph (tiny shapes may round differently).
_MIN_ROWS = 16


def _row_tiles(n: int, step: int) -> list[tuple[int, int]]:
    """[r0, r1) row tiles of ``step`` rows over n, the last merged when below _MIN_ROWS."""
    bounds = list(range(0, n, step)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < _MIN_ROWS:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _at_least(v: Tensor) -> Tensor:
    """``v`` with zero rows appended up to _MIN_ROWS, so that a matmul with it keeps the
    BLAS kernel of the full-size tiles (its first rows' products are unchanged)."""
    k = v.shape[0]
    return v if k >= _MIN_ROWS else torch.cat((v, v.new_zeros(_MIN_ROWS - k, v.shape[1])))


class _SpatialForest:
    """The spatial step at every tau from one maximum spanning forest per frame.

    When the per-frame similarities are symmetric (bit for bit, as the CPU matmul gives
    them), the components of frame t's graph at tau are those of its tree edges of weight
    > tau (single linkage), so the spatial count M1(tau) is known for every tau at once and
    the partition at a tau costs one edge-list propagation over T*(N-1) edges instead of
    a dense (T, N, N) one. Degrees are counts of each row's similarities > tau. The result is
    ``spatial_step``'s, bit for bit (same partition, degrees and means).
    """

    def __init__(self, sims: Tensor) -> None:
        t, n, _ = sims.shape
        self.t, self.n = t, n
        self.ei, self.ej, self.w = spanning_forest(sims)
        self.w_sorted = self.w.sort().values
        # the similarities themselves, their diagonal set to -inf in place (no copy): the
        # self-loop is counted apart in the degrees, and no tree edge is a self-pair
        self.off = sims
        self.off.diagonal(dim1=1, dim2=2).fill_(-torch.inf)

    def count(self, tau: float) -> int:
        """M1(tau): T*N minus the tree edges of weight > tau."""
        # the threshold in the similarities' dtype: the rounding of ``sims > tau``
        at = torch.full((1,), tau, dtype=self.w.dtype, device=self.w.device)
        below = torch.searchsorted(self.w_sorted, at, right=True)
        return self.t * self.n - (self.w.numel() - int(below))

    def below(self, budget: int) -> float:
        """The largest tree weight at which M1 is below ``budget`` (-2 when none): the
        count there, at most M1, is under the budget."""
        w = self.w_sorted
        # M1(w_k) = T*N - #(w > w_k); the last k where it is below the budget
        m1 = self.t * self.n - (w.numel() - torch.searchsorted(w, w, right=True))
        under = (m1 < budget).nonzero()
        return float(w[int(under[-1])]) if under.numel() else -2.0

    def labels(self, tau: float) -> Tensor:
        """(T*N,) the smallest member of every token's spatial component at tau."""
        keep = self.w > tau
        return edge_components(self.t * self.n, self.ei[keep], self.ej[keep])

    def degree(self, tau: float) -> Tensor:
        """(T*N,) every token's degree in its frame's graph at tau, self-loop counted."""
        return 1 + count_true(self.off > tau, -1).flatten()

    def step(self, x: Tensor, tau: float) -> tuple[Tensor, Tensor, Tensor]:
        """``spatial_step(x, xn, tau)``: comp (T*N,), hubs (M1,), reps (M1, D)."""
        t, n, d = x.shape
        comp, hubs = hub_order(self.labels(tau), self.degree(tau))
        return comp, hubs, segment_mean(x.reshape(t * n, d), comp, hubs.numel())


class _RepPairs:
    """Temporal similarities of spatial representatives, reused across the search's taus.

    A spatial component is identified across taus by (smallest member, size): partitions
    at different taus are nested, so two components that share their smallest member and
    their size are the same set, and their means (and unit vectors) are the same bits. The
    cache keeps every representative seen (its unit vector, in the chunk of the step that
    added it: no copy) and pairs of them with similarity > floor, each computed once (the
    same matmul elements the temporal step thresholds).

    A step needs the pairs among its own representatives only, and computes those it does
    not hold yet: its new representatives against all of its own, and the pairs of two
    seen ones never present at one step. A component is present over an interval of tau
    (connected below some tau, cut from the rest above another), so two representatives
    present now were both present at an earlier step unless one was seen only below the
    current tau and the other only above it. Representatives of other steps are never
    multiplied, so a step far from the final tau costs only its own pairs.
    """

    def __init__(self, floor: float, limit: int) -> None:
        self.floor, self.limit = floor, limit
        self.n = 0  # representatives held
        self.keys: Tensor | None = None  # (n,) int64, in the order seen
        self.chunks: list[Tensor] = []  # unit vectors, one (k, D) chunk per add
        self.seen_lo: Tensor | None = None  # (n,) float64: smallest tau seen present
        self.seen_hi: Tensor | None = None  # (n,) float64: largest tau seen present
        self.pa = self.pb = self.ps = None  # pairs, each once, with similarity ps > floor
        self.full = False  # the pairs exceeded the limit

    def lookup(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """(M1,) keys -> (ids, new): the cache id of every representative (-1 when unseen)
        and the (M1,) bool mask of the unseen ones."""
        if self.n == 0:
            known = torch.full_like(keys, -1)
        else:
            order = self.keys.argsort()
            sk = self.keys[order]
            at = torch.searchsorted(sk, keys).clamp_max(sk.numel() - 1)
            known = torch.where(sk[at] == keys, order[at], -1)
        return known, known < 0

    def _rows(self, ids: Tensor) -> Tensor:
        """The unit vectors of cache ids ``ids``, in their order (gathered from the chunks)."""
        first = self.chunks[0]
        out = first.new_empty(ids.numel(), first.shape[1])
        start = 0
        for c in self.chunks:
            inside = (ids >= start) & (ids < start + c.shape[0])
            out[inside] = c[ids[inside] - start]
            start += c.shape[0]
        return out

    def _pairs(self, rows: Tensor, row_ids: Tensor, cols: Tensor, col_ids: Tensor,
               own: bool, found: list) -> bool:
        """Pairs of ``rows`` x ``cols`` above the floor (the strict upper triangle when
        they are the same vectors, ``own``) appended to ``found`` as (ids a, ids b, sims),
        in row tiles of at most 1/16 of the rows (256 at least), as BlockGraph's; a tile
        of own rows multiplies the columns from its own first row on. False when the
        pairs exceeded the limit."""
        n_rows, n_cols = rows.shape[0], cols.shape[0]
        step = max(_MIN_ROWS, min(row_block(n_rows, n_cols, BLOCK_ELEMENTS // 2),
                                  max(256, -(-n_rows // 16))))
        for r0, r1 in _row_tiles(n_rows, step):
            k = r1 - r0
            c0 = r0 if own else 0
            span = cols[c0:]
            sim = (_at_least(rows[r0:r1]) @ _at_least(span).T)[:k, : span.shape[0]]
            a = sim > self.floor
            if own:
                a[:, :k].triu_(1)
            i, j = a.nonzero(as_tuple=True)
            found[3] += i.numel()
            if found[3] > self.limit:
                return False
            found[0].append(row_ids[r0 + i])
            found[1].append(col_ids[c0 + j])
            found[2].append(sim[i, j])
        return True

    def add(self, keys: Tensor, rn: Tensor, old: Tensor, tau: float) -> Tensor:
        """A step at ``tau`` with unseen representatives (keys, unit vectors) and seen ones
        (cache ids ``old``): registers the unseen ones -> (k,) their ids, and adds the
        pairs above the floor that the step's representatives lack: new x new, new x old,
        and old ones seen only below tau x old ones seen only above it. Stops adding pairs
        (``full``) when they would exceed the limit."""
        dev = keys.device
        k_new = keys.numel()
        n_old = self.n
        ids = n_old + torch.arange(k_new, device=dev)
        found = [[], [], [], 0 if self.pa is None else self.pa.numel()]
        if self.pa is not None:
            found[0], found[1], found[2] = [self.pa], [self.pb], [self.ps]
        below = above = None
        if n_old:
            lo_t, hi_t = self.seen_lo[old], self.seen_hi[old]
            below, above = old[hi_t < tau], old[lo_t > tau]
        if k_new:
            self.keys = keys if self.keys is None else torch.cat((self.keys, keys))
            self.chunks.append(rn)
            self.n = n_old + k_new
            at = torch.full((k_new,), tau, dtype=torch.float64, device=dev)
            self.seen_lo = at if self.seen_lo is None else torch.cat((self.seen_lo, at))
            self.seen_hi = at.clone() if self.seen_hi is None else torch.cat((self.seen_hi, at))
        if n_old:
            self.seen_lo[old] = self.seen_lo[old].clamp_max(tau)
            self.seen_hi[old] = self.seen_hi[old].clamp_min(tau)
        ok = True
        if k_new:
            ok = self._pairs(rn, ids, rn, ids, True, found)
            if ok and old.numel():
                ok = self._pairs(rn, ids, self._rows(old), old, False, found)
        if ok and below is not None and below.numel() and above.numel():
            ok = self._pairs(self._rows(below), below, self._rows(above), above, False, found)
        if not ok:
            self.full = True
            return ids
        if found[0]:
            self.pa, self.pb = torch.cat(found[0]), torch.cat(found[1])
            self.ps = torch.cat(found[2])
        return ids

    def present(self, ids: Tensor) -> Tensor:
        """(n,) bool: which cached representatives are among ``ids``."""
        out = torch.zeros(self.n, dtype=torch.bool, device=ids.device)
        out[ids] = True
        return out

    def _edges(self, ids: Tensor, tau: float) -> tuple[Tensor, Tensor]:
        """The temporal edges at tau among cache ids ``ids``, as positions in ``ids``."""
        pos = torch.full((self.n,), -1, dtype=torch.long, device=ids.device)
        pos[ids] = torch.arange(ids.numel(), device=ids.device)
        sel = self.ps > tau
        ei, ej = pos[self.pa[sel]], pos[self.pb[sel]]
        both = (ei >= 0) & (ej >= 0)
        return ei[both], ej[both]

    def count(self, ids: Tensor, tau: float) -> int:
        """The temporal step's count at tau over the representatives ``ids``."""
        m = ids.numel()
        labels = edge_components(m, *self._edges(ids, tau))
        return int(count_true(labels == torch.arange(m, device=ids.device)))

    def temporal(self, ids: Tensor, m1: int, tau: float) -> tuple[Tensor, Tensor]:
        """The components of ``temporal_step`` at tau over the M1 representatives of cache
        ids ``ids``, from the cached pairs -> comp (M1,), hubs (M2,)."""
        ei, ej = self._edges(ids, tau)
        degree = 1 + torch.bincount(ei, minlength=m1) + torch.bincount(ej, minlength=m1)
        return hub_order(edge_components(m1, ei, ej), degree)


def aiming_forest(sims: Tensor | None) -> _SpatialForest | None:
    """The spatial forest of per-frame similarities, or None when they were not computed
    or are not symmetric bit for bit (then the search interpolates in log count). The
    forest takes ``sims`` over: their diagonal becomes -inf."""
    if sims is None or not torch.equal(sims, sims.transpose(1, 2)):
        return None
    return _SpatialForest(sims)


class PassCounter:
    """count_at running a full structure pass per step (official mode where a graph can
    be sampled), aimed with the exact-mode forest."""

    def __init__(self, structure, xn: Tensor) -> None:
        self.structure = structure
        self.forest = aiming_forest(frame_similarities(xn))

    def __call__(self, tau: float, lo: float) -> tuple[int, SCCStructure]:
        st = self.structure(tau)
        return st.reps.shape[0], st


class SearchCounter:
    """count_at for the exact-mode tau search. Results are those of ``scc_structure`` at
    the tau asked, bit for bit; what makes them cheap:

    - the per-frame similarities are computed once, and (when symmetric) one maximum
      spanning forest per frame gives the spatial step at any tau (:class:`_SpatialForest`)
      and the spatial count M1(tau) for every tau (``spatial_count``, used by the search
      to aim);
    - the temporal similarities of the representatives are kept above the bracket's
      lower end (:class:`_RepPairs`), so a step multiplies only the pairs of its own
      representatives that the previous steps did not have (before any lower end is
      known, from :meth:`expect` or a step, the plain temporal step runs and keeps
      nothing);
    - a step returns a :class:`_LazyStructure`: its count, and its means when read.
    """

    def __init__(self, xw: Tensor, xn: Tensor) -> None:
        self.xw, self.xn = xw, xn
        self.sims = frame_similarities(xn)
        self.forest = aiming_forest(self.sims)  # when built, the diagonal of sims is -inf
        self.pairs: _RepPairs | None = None
        self.known_lo = -2.0  # see expect()
        self._ids: dict[float, tuple[_RepPairs, Tensor]] = {}  # tau -> its cache ids
        self.steps = 0

    def expect(self, budget: int) -> None:
        """Told the budget by the search: below the largest tau where the spatial count is
        under it, the count (at most M1) is under it too, a lower end known before any
        step, so that the first step's pairs can be kept as well."""
        if self.forest is not None:
            self.known_lo = self.forest.below(budget)

    def spatial_count(self, tau: float) -> int | None:
        """M1(tau) without a pass, or None when the forest is not available."""
        return None if self.forest is None else self.forest.count(tau)

    def events(self, lo: float, hi: float) -> Tensor | None:
        """The taus in (lo, hi) where the count can change, when no spatial tree weight
        lies in (lo, hi) (the partition is lo's over all of it): the distinct cached pair
        similarities in (lo, hi) between lo's representatives, ascending. None when lo's
        step did not use the current cache (then they are not known)."""
        entry = self._ids.get(lo)
        if entry is None or entry[0] is not self.pairs or self.pairs.full:
            return None
        p, ids = entry
        if p.ps is None:  # no pair above the floor: no temporal edge anywhere in (lo, hi)
            return torch.empty(0, device=ids.device)
        inside = p.present(ids)
        sel = (p.ps > lo) & (p.ps < hi) & inside[p.pa] & inside[p.pb]
        return p.ps[sel].unique()

    def fixed_count(self, lo: float, tau: float) -> int:
        """The count at tau in (lo, hi) of :meth:`events`: lo's partition, the temporal
        edges > tau (from the cache)."""
        p, ids = self._ids[lo]
        return p.count(ids, tau)

    def _pair_floor(self, tau: float, lo: float, m1: int) -> None:
        """A fresh pair cache with floor min(lo, tau), marked full at once when the pairs
        above it (estimated from the per-frame ones) would exceed the limit."""
        floor = min(lo, tau)
        p = self.pairs = _RepPairs(floor, _PAIR_CACHE_LIMIT)
        if self.sims is not None:
            t, n = self.sims.shape[:2]
            above = count_true(self.sims > floor)
            if self.forest is None:  # the diagonal still holds the self-similarities
                above = above - t * n
            frac = above / max(1, t * n * (n - 1))
            p.full = float(frac) * m1 * (m1 - 1) / 2 > _PAIR_CACHE_LIMIT

    def _new_means(self, comp1: Tensor, new: Tensor, size1: Tensor) -> Tensor:
        """The means of the components marked ``new``, in their order, the bits
        ``segment_mean`` over all tokens gives (each sums its members in ascending token
        order): from the members of those components alone when they are at most half
        the tokens, else from all tokens with the others summed into a discarded row."""
        t, n, d = self.xw.shape
        flat = self.xw.reshape(t * n, d)
        k = int(new.sum())
        pos = torch.cumsum(new, 0) - 1
        tok_new = new[comp1]
        if 2 * int(tok_new.sum()) <= t * n:
            tok = tok_new.nonzero().squeeze(1)
            sums = segment_sum(flat[tok], pos[comp1[tok]], k)
        else:
            sums = segment_sum(flat, torch.where(tok_new, pos[comp1], k), k + 1)[:k]
        return sums.div_(size1[new].to(sums.dtype).unsqueeze(1))

    def __call__(self, tau: float, lo: float) -> tuple[int, _LazyStructure]:
        self.steps += 1
        t, n, d = self.xw.shape
        flat = self.xw.reshape(t * n, d)
        total = t * n
        reps1 = labels = None
        if self.forest is not None:  # components only; hub order and means when needed
            labels = self.forest.labels(tau)
            is_root = labels == torch.arange(total, device=labels.device)
            first = is_root.nonzero().squeeze(1)  # every component's smallest member
            comp1 = (torch.cumsum(is_root, 0) - 1)[labels]  # numbered by smallest member
            m1 = first.numel()
        else:
            comp1, hubs1, reps1 = spatial_step(self.xw, self.xn, tau, sims=self.sims)
            m1 = hubs1.numel()
            first = torch.full((m1,), total, dtype=torch.long, device=comp1.device)
            first = first.scatter_reduce(0, comp1, torch.arange(total, device=comp1.device),
                                         "amin")
        size1 = segment_count(comp1, m1)
        p = self.pairs
        lo = max(lo, self.known_lo) if self.known_lo < tau else lo
        use_cache = lo >= -1.0  # no lower end yet: the pairs above it would be every pair
        if use_cache and (p is None or tau < p.floor or (p.full and lo > p.floor)):
            self._pair_floor(tau, lo, m1)
        if use_cache and not self.pairs.full:
            keys = first * (total + 1) + size1
            ids, new = self.pairs.lookup(keys)
            where = new.nonzero().squeeze(1)
            raw = None
            if where.numel():
                raw = self._new_means(comp1, new, size1) if reps1 is None else reps1[where]
            rn = _unit_rows(raw) if raw is not None else self.xw.new_empty(0, d)
            ids[where] = self.pairs.add(keys[where], rn, ids[~new], tau)
        if use_cache and not self.pairs.full:
            cache = self.pairs
            self._ids[tau] = (cache, ids)
            count = cache.count(ids, tau)
            if labels is None:  # comp1 is in hub order already
                return count, _LazyStructure(
                    flat, m1, lambda: (comp1, hubs1, *cache.temporal(ids, m1, tau), reps1)
                )
            forest = self.forest

            def build():  # the hub order of the spatial and temporal steps
                c1, h1 = hub_order(labels, forest.degree(tau))
                ids_h = ids[comp1[h1]]  # the cache id of every component, in hub order
                return (c1, h1, *cache.temporal(ids_h, m1, tau), None)

            return count, _LazyStructure(flat, m1, build)
        if labels is not None:
            comp1, hubs1 = hub_order(labels, self.forest.degree(tau))
        if reps1 is None:
            reps1 = segment_mean(flat, comp1, m1)
        comp2, hubs2 = temporal_components(reps1, tau)
        return hubs2.numel(), _LazyStructure(flat, m1, lambda: (comp1, hubs1, comp2, hubs2, reps1))


class _LazyStructure:
    """The :class:`SCCStructure` of one search step, built only when read.

    A search step needs only the count; the hub order of both steps and the temporal
    representatives (two segment means over (T*N, D) and (M1, D)) are computed for the one
    step whose structure is used, by the same calls as ``scc_structure`` (the same bits).
    ``build() -> (comp1, hubs1, comp2, hubs2, reps1 or None)`` in hub order."""

    def __init__(self, flat: Tensor, m1: int, build) -> None:
        self.flat, self.spatial_tokens, self._build = flat, m1, build
        self._done: tuple[Tensor, Tensor, Tensor] | None = None

    def _get(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._done is None:
            comp1, hubs1, comp2, hubs2, reps1 = self._build()
            m1, m2 = hubs1.numel(), hubs2.numel()
            if reps1 is None:
                reps1 = segment_mean(self.flat, comp1, m1)
            size1 = segment_count(comp1, m1)
            support = segment_sum(size1.unsqueeze(1), comp2, m2).squeeze(1)
            self._done = (segment_mean(reps1, comp2, m2), hubs1[hubs2], support)
            self._build = None
        return self._done

    @property
    def reps(self) -> Tensor:
        return self._get()[0]

    @property
    def anchors(self) -> Tensor:
        return self._get()[1]

    @property
    def support(self) -> Tensor:
        return self._get()[2]


def _unit_rows(v: Tensor) -> Tensor:
    """``normalize(v)`` row by row, the same bits as normalising them among many rows: a
    few rows are padded (with copies of the first) to at least _MIN_ROWS and the thread
    count, so that the norm's reduction is split over rows, never within one."""
    k = v.shape[0]
    rows = max(_MIN_ROWS, torch.get_num_threads())
    if k >= rows:
        return normalize(v)
    return normalize(torch.cat((v, v[:1].expand(rows - k, -1))))[:k]


def _aim(forest: _SpatialForest, lo, c_lo, hi, c_hi, target) -> float | None:
    """The next tau of the search, aimed with the exact spatial count M1(tau).

    The temporal step keeps a fraction rho(tau) = M2 / M1 of the spatial representatives;
    log rho is interpolated linearly in tau between the bracket's ends, and the tau
    returned is the first tree weight in (lo, hi) (where M1 steps up) at which
    M1(tau) * rho(tau) reaches the target. None when no tree weight lies inside the
    bracket (the partition is the same over all of it).
    """
    w = forest.w_sorted
    cand = w[(w > lo) & (w < hi)]
    if cand.numel() == 0:
        return None
    total = forest.t * forest.n
    m1_lo, m1_hi = forest.count(lo), forest.count(hi)
    g_lo = math.log(c_lo) - math.log(m1_lo)
    g_hi = math.log(c_hi) - math.log(m1_hi)
    m1 = total - (w.numel() - torch.searchsorted(w, cand, right=True))
    f = (cand.double() - lo) / (hi - lo)
    pred = m1.double().log() + g_lo + f * (g_hi - g_lo)
    reach = (pred >= math.log(target)).nonzero()
    at = int(reach[0]) if reach.numel() else cand.numel() - 1
    return float(cand[at])


def _within(count_at, lo: float, hi: float, budget: int) -> float | None:
    """The next tau when no spatial tree weight lies in (lo, hi): the partition is lo's
    over the whole bracket and only temporal edges change, so the count is monotone there
    and known from the pair cache without a pass. Returns the smallest event tau in
    (lo, hi) whose count reaches the budget (a count jump may skip the settling band:
    this is then the closest count above it), ``hi`` when none does, None when the
    events are not known."""
    events = count_at.events(lo, hi)
    if events is None:
        return None
    a, b = 0, events.numel()
    while a < b:  # the first event whose count reaches the budget
        m = (a + b) // 2
        if count_at.fixed_count(lo, float(events[m])) >= budget:
            b = m
        else:
            a = m + 1
    return hi if a == events.numel() else float(events[a])


def search_tau(count_at, budget: int, total: int):
    """Search the tau whose component count is at least ``budget`` and close to it.

    count_at(tau, lo) -> (count, state), lo the bracket's lower end. The count at
    tau = -1.0001 is 1 (every cosine is larger) and at 1.0001 it is T*N (no edge but
    self-loops), so the bracket is valid. When count_at knows the spatial count at every
    tau (``SearchCounter`` with its forest), each step is aimed by :func:`_aim`; otherwise
    it interpolates the bracket in log(count) (clamped to its inner 80%). Either way the
    end that did not move is discounted when the same end moved twice in a row (Illinois:
    its distance to the target halved in log count, again at every further repeat).
    It stops at a count in [budget, budget + budget // 50] (the rest is settled by the
    caller), when the bracket is narrower than float32 cosine resolution, or after
    _SEARCH_STEPS steps. Returns (tau, count, state) at the upper end of the final bracket.
    """
    slack = budget // 50
    target = budget + slack / 2
    forest = getattr(count_at, "forest", None)
    if hasattr(count_at, "expect"):
        count_at.expect(budget)
    lo, c_lo = -1.0001, 1.0
    hi, c_hi, hi_state = 1.0001, float(total), None
    last: list[str] = []
    for _ in range(_SEARCH_STEPS):
        if hi - lo < _SEARCH_TOL:
            break
        # Illinois: the end that stayed is pulled halfway to the target (in log count)
        e_lo, e_hi = c_lo, c_hi
        if len(last) >= 2 and last[-1] == last[-2]:
            runs = 1
            while runs < len(last) and last[-1 - runs] == last[-1]:
                runs += 1
            shrink = 0.5 ** (runs - 1)
            if last[-1] == "lo":
                e_hi = target * (c_hi / target) ** shrink
            else:
                e_lo = target * (c_lo / target) ** shrink
        mid, last_step = None, False
        if forest is not None:
            mid = _aim(forest, lo, e_lo, hi, e_hi, target)
            if mid is None and hasattr(count_at, "events"):
                mid = _within(count_at, lo, hi, budget)
                if mid == hi:  # no tau in (lo, hi) reaches the budget: hi is the answer
                    break
                last_step = mid is not None
        if mid is None:
            f = (math.log(target) - math.log(e_lo)) / (math.log(e_hi) - math.log(e_lo))
            f = min(max(f, 0.1), 0.9) if forest is None else 0.5
            mid = lo + f * (hi - lo)
        count, state = count_at(mid, lo)
        if count >= budget:
            hi, c_hi, hi_state = mid, float(count), state
            last.append("hi")
            if count <= budget + slack or last_step:
                break
        else:
            lo, c_lo = mid, float(count)
            last.append("lo")
    if hi_state is None:
        c, hi_state = count_at(hi, lo)
        c_hi = float(c)
    return hi, int(c_hi), hi_state
