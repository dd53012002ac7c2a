"""Reference antialias in plain torch (float64, autograd for the gradients).

Independent of the kernels' formulation: vertices are projected to pixels by
dividing by w, edge lines are intersected with the pixel-pair segment in 2D,
and the mesh is walked with a dict from vertex pair to triangles instead of a
hash table.
Valid for vertices in front of the camera (w > 0).
"""

from collections import defaultdict

import torch

from glrast import ids

__all__ = ["antialias", "box_coverage", "decode_triangle_id", "edge_triangles"]


def decode_triangle_id(rast: torch.Tensor) -> torch.Tensor:
    """int64 triangle ids [N, H, W] from rast [..., 3] (SPEC.md's encoding), -1 where empty."""
    w = rast[..., 3].float().contiguous()
    exact = w.long() - 1
    large = w.view(torch.int32).long() - ids.BITS_BASE - 1
    return torch.where(w > 0, torch.where(w <= float(ids.EXACT_MAX), exact, large), -1)


def edge_triangles(tri: torch.Tensor) -> dict:
    """{(lo, hi): [triangles]} for every undirected edge of tri [T, 3]."""
    table = defaultdict(list)
    for t, (a, b, c) in enumerate(tri.tolist()):
        for u, v in ((a, b), (b, c), (c, a)):
            if u != v:
                table[(min(u, v), max(u, v))].append(t)
    return table


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def _continuation(scr, tri_list, candidates, t, a, b, c):
    """The smallest-id triangle among `candidates` (t excluded) that holds edge (a, b) and has its
    third vertex strictly on the other side of the edge's line than c (the surface continues
    there), or None."""
    ax, ay = scr[a]
    ex, ey = scr[b][0] - ax, scr[b][1] - ay
    own = _cross(ex, ey, scr[c][0] - ax, scr[c][1] - ay)
    for u in sorted(candidates):
        third = [v for v in tri_list[u] if v != a and v != b]
        if u == t or not third:
            continue
        if own * _cross(ex, ey, scr[third[0]][0] - ax, scr[third[0]][1] - ay) < 0:
            return u
    return None


def _find_silhouette(scr, tri_list, table, t, end_t, start, end, axis, max_walk=64, tolerance=0.0625):
    """The silhouette edge (a, b) that the segment start -> end crosses, walking from triangle t
    (which holds `start`) over the mesh while the surface continues, up to triangle end_t (shown at
    `end`); None if there is none."""
    (px, py), (qx, qy) = start, end
    dx, dy = qx - px, qy - py
    entry, lo = None, 0.0
    for _ in range(max_walk):
        found = None  # (edge index, crossing) of the first line crossed from t's side to the outside
        for k in range(3):
            a, b, c = tri_list[t][k], tri_list[t][(k + 1) % 3], tri_list[t][(k + 2) % 3]
            if entry == {a, b}:
                continue
            ax, ay = scr[a]
            ex, ey = scr[b][0] - ax, scr[b][1] - ay
            inside = _cross(ex, ey, scr[c][0] - ax, scr[c][1] - ay)
            if inside * _cross(ex, ey, dx, dy) >= 0:  # not moving out of t's side
                continue
            u = _cross(ax - px, ay - py, ex, ey) / _cross(dx, dy, ex, ey)
            if found is None or u < found[1]:
                found = (k, u)
        if found is None or not lo - tolerance <= found[1] <= 1 + tolerance:
            return None
        k, u = found
        a, b, c = tri_list[t][k], tri_list[t][(k + 1) % 3], tri_list[t][(k + 2) % 3]
        on_edge = table.get((min(a, b), max(a, b)), [])
        if end_t in on_edge and _continuation(scr, tri_list, [end_t], t, a, b, c) is not None:
            return None  # the surface runs on into the triangle that `end` shows
        nxt = _continuation(scr, tri_list, on_edge, t, a, b, c)
        if nxt is None:
            ex, ey = scr[b][0] - scr[a][0], scr[b][1] - scr[a][1]
            along, across = (ex, ey) if axis == 0 else (ey, ex)
            return None if abs(along) > abs(across) else (a, b)
        t, entry, lo = nxt, {a, b}, min(max(u, 0.0), 1.0)
    return None


def antialias(color, rast, pos, tri, pos_gradient_boost=1.0):
    """color [N, H, W, C], rast [N, H, W, 4], pos [N, V, 4] or [V, 4] (range mode), tri [T, 3].

    Returns the antialiased colours [N, H, W, C] in float64 (see glrast/antialias.py for the formula),
    differentiable w.r.t. color and pos (the latter scaled by pos_gradient_boost).
    """
    n, h, w, _ = color.shape
    ids = decode_triangle_id(rast)
    z = rast[..., 2]
    p = pos.double()
    p = p if p.ndim == 3 else p[None].expand(n, *p.shape)
    sx = (p[..., 0] / p[..., 3] + 1) / 2 * w
    sy = (p[..., 1] / p[..., 3] + 1) / 2 * h
    # boost the gradient, not the value
    sx = sx.detach() + pos_gradient_boost * (sx - sx.detach())
    sy = sy.detach() + pos_gradient_boost * (sy - sy.detach())
    table = edge_triangles(tri)
    tri_list = tri.tolist()
    src = color.double()
    blends = defaultdict(list)  # (image, row, col) of a blended pixel -> [(amount, source pixel)]
    for img in range(n):
        scr_det = torch.stack([sx[img], sy[img]], -1).detach().tolist()
        for axis, (dr_, dc_) in enumerate(((0, 1), (1, 0))):
            i1 = ids[img, : h - dr_, : w - dc_]
            i2 = ids[img, dr_:, dc_:]
            for r, c in (i1 != i2).nonzero().tolist():
                pix = [(r, c), (r + dr_, c + dc_)]
                t_ids = [int(ids[img][q]) for q in pix]
                zs = [float(z[img][q]) for q in pix]
                second_owns = t_ids[0] < 0 or (t_ids[1] >= 0 and zs[1] < zs[0])
                own, oth = (pix[1], pix[0]) if second_owns else (pix[0], pix[1])
                t, end_t = (t_ids[1], t_ids[0]) if second_owns else (t_ids[0], t_ids[1])
                if t >= len(tri_list):
                    continue
                px, py = own[1] + 0.5, own[0] + 0.5
                qx, qy = oth[1] + 0.5, oth[0] + 0.5
                dx, dy = qx - px, qy - py
                edge = _find_silhouette(scr_det, tri_list, table, t, end_t, (px, py), (qx, qy), axis)
                if edge is None:
                    continue
                a, b = edge
                # dc again, differentiably: where the edge's line meets the segment.
                ax_, ay_ = sx[img, a], sy[img, a]
                ex_, ey_ = sx[img, b] - ax_, sy[img, b] - ay_
                dc = _cross(ax_ - px, ay_ - py, ex_, ey_) / _cross(dx, dy, ex_, ey_)
                dc = dc.clamp(0, 1)  # GL's coverage may disagree by a rounding error; no gradient there
                if float(dc.detach()) < 0.5:
                    target, source, amount = own, oth, 0.5 - dc
                else:
                    target, source, amount = oth, own, dc - 0.5
                if float(amount.detach()) > 0:
                    blends[(img, *target)].append((amount, source))
    out = src.clone()
    for (img, r, c), terms in blends.items():
        # The amounts a pixel receives are scaled down to add up to at most 1: a convex combination.
        total = torch.stack([amount for amount, _ in terms]).sum().clamp(min=1)
        delta = sum(amount * (src[img][source] - src[img, r, c]) for amount, source in terms) / total
        out = out.index_put((torch.tensor([img]), torch.tensor([r]), torch.tensor([c])), delta[None], accumulate=True)
    return out


def _clip(poly, axis, bound, keep_above):
    """One Sutherland-Hodgman step: the part of the polygon with q[axis] >= bound (or <= bound)."""

    def inside(q):
        return q[axis] >= bound if keep_above else q[axis] <= bound

    def cut(a, b):
        s = (bound - a[axis]) / (b[axis] - a[axis])
        return (a[0] + s * (b[0] - a[0]), a[1] + s * (b[1] - a[1]))

    out = []
    for k, cur in enumerate(poly):
        prev = poly[k - 1]
        if inside(cur) != inside(prev):
            out.append(cut(prev, cur))
        if inside(cur):
            out.append(cur)
    return out


def _area(poly):
    return 0.5 * abs(sum(_cross(*poly[k - 1], *poly[k]) for k in range(len(poly))))


def box_coverage(points, height: int, width: int) -> torch.Tensor:
    """Exact box-filtered coverage [H, W] (float64) of a triangle given by three (x, y) pixel positions:
    the area of the triangle inside each pixel's unit square."""
    cov = torch.zeros(height, width, dtype=torch.float64)
    xs, ys = [q[0] for q in points], [q[1] for q in points]
    for r in range(max(0, int(min(ys))), min(height, int(max(ys)) + 1)):
        for c in range(max(0, int(min(xs))), min(width, int(max(xs)) + 1)):
            poly = [tuple(map(float, q)) for q in points]
            for axis, bound, keep_above in ((0, c, True), (0, c + 1, False), (1, r, True), (1, r + 1, False)):
                poly = _clip(poly, axis, bound, keep_above)
            if len(poly) >= 3:
                cov[r, c] = _area(poly)
    return cov
