// antialias: analytic blending across silhouette edges (see glrast/antialiasing.py
// for the formula), and the topology hash that tells silhouettes from interior edges.
//
// Topology hash: an open-addressing table (linear probing, power-of-two
// capacity) with one entry per (undirected edge, triangle): key = lo << 32 | hi
// for the edge's vertex indices lo < hi, value = the triangle. Entries of one
// edge sit in one probe chain, so a lookup walks the chain from the key's home
// slot up to the first empty slot and sees every triangle on the edge (any
// number of them: non-manifold meshes need no special case).
//
// Pixel pairs: pair (pixel, axis) joins the pixel with its neighbour at column
// + 1 (axis 0) or row + 1 (axis 1). antialias_pairs decides each pair once and
// records it (blend amount and direction, silhouette edge); antialias_blend and
// antialias_grad_color gather, per pixel, the records of the (up to) four pairs
// it belongs to, so no two threads write one output; antialias_grad_pos
// scatters per pair onto pos through an Accumulator.
#include "common.h"

#define AA_EMPTY_KEY 0xFFFFFFFFFFFFFFFFull

struct HashParams {
    const int* tri;   // [T, 3]
    u64* keys;        // [capacity], AA_EMPTY_KEY-initialised
    int* tris;        // [capacity]
    i64 mask;         // capacity - 1
};
GLRAST_LAYOUT(HashParams, tri, keys, tris, mask)

struct AntialiasParams {
    const float* color;      // [N, H, W, C]
    const float* rast;       // [N, H, W, 4] (forward only)
    const float* pos;        // [N, V, 4] (instanced) or [V, 4] (range mode)
    const int* tri;          // [T, 3]
    const u64* keys;         // topology hash
    const int* tris;
    float* alpha;            // [N, H, W, 2] per pair: +a blends the pixel towards its neighbour, -a the reverse
    int* edge;               // [N, H, W, 2, 2] per pair: the silhouette edge's vertex indices, -1 if none
    float* out;              // [N, H, W, C]
    const float* grad_out;   // backward: [N, H, W, C]
    float* grad_color;       // backward: [N, H, W, C]
    Accumulator grad_pos;    // backward: slots shaped like pos
    i64 mask;                // hash capacity - 1
    int num_tris;
    int height, width, channels;
    int verts_per_image;     // V in instanced mode, 0 in range mode
    float pos_gradient_boost;
};
GLRAST_LAYOUT(AntialiasParams, color, rast, pos, tri, keys, tris, alpha, edge, out, grad_out, grad_color, grad_pos, mask,
              num_tris, height, width, channels, verts_per_image, pos_gradient_boost)

// ---------------------------------------------------------------------------
// Topology hash

GLRAST_HD u64 edge_key(int a, int b) {
    u64 lo = (u64)(a < b ? a : b), hi = (u64)(a < b ? b : a);
    return lo << 32 | hi;
}

GLRAST_HD i64 edge_slot(u64 key, i64 mask) {  // splitmix64's finaliser: spreads consecutive indices
    key ^= key >> 30; key *= 0xBF58476D1CE4E5B9ull;
    key ^= key >> 27; key *= 0x94D049BB133111EBull;
    key ^= key >> 31;
    return (i64)(key & (u64)mask);
}

GLRAST_KERNEL(antialias_hash_build, HashParams) {
    const int* v = p.tri + 3 * i;
    for (int k = 0; k < 3; ++k) {
        int a = v[k], b = v[k == 2 ? 0 : k + 1];
        if (a == b) continue;  // a degenerate edge never crosses a pixel pair
        u64 key = edge_key(a, b);
        i64 s = edge_slot(key, p.mask);
        // The table holds at most half its capacity, so a free slot is always found.
        for (i64 probe = 0; probe <= p.mask; ++probe, s = (s + 1) & p.mask) {
            if (atomic_cas_u64(p.keys + s, AA_EMPTY_KEY, key) == AA_EMPTY_KEY) {
                p.tris[s] = (int)i;
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Geometry in homogeneous pixel coordinates relative to the owner pixel's centre c:
// a vertex (x, y, z, w) becomes ((x + w) W/2 - w cx, (y + w) H/2 - w cy, w), whose
// projection is the vertex's pixel position minus c. An edge's line is L = A x B;
// the line function L . (dx, dy, 1) is zero on the line and L.z at c itself. A visible
// point of triangle ABC is a A + b B + g C (a, b, g >= 0) with a positive w, where the line
// function is g L.C / w: the triangle lies on the side sign(L . C) of line AB, also when
// C is behind the camera (w < 0; there its projection would land on the other side).

struct V3 { float x, y, z; };

GLRAST_HD V3 cross3(V3 a, V3 b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }
GLRAST_HD float dot3(V3 a, V3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }

// Homogeneous coordinates may be scaled by any positive factor without changing the projected point,
// the sides of lines or where they cross the segment; a vertex of huge or tiny magnitude is divided by
// the power of two 2^exponent first (see rescale_exponent), so that the products here stay finite.
GLRAST_HD V3 vertex_rel(const AntialiasParams& p, i64 vbase, int v, float cx, float cy, int* exponent = nullptr) {
    const float* q = p.pos + 4 * (vbase + v);
    float x = q[0], y = q[1], w = q[3];
    int e = rescale_exponent(fmaxf(fmaxf(fabsf(x), fabsf(y)), fabsf(w)));
    if (e != 0) { x = ldexpf(x, -e); y = ldexpf(y, -e); w = ldexpf(w, -e); }
    if (exponent) *exponent = e;
    return {(x + w) * (0.5f * p.width) - w * cx, (y + w) * (0.5f * p.height) - w * cy, w};
}

// The segment from the owner pixel's centre (cx, cy) one pixel along the axis (step = +1 or -1).
struct Segment {
    float cx, cy, step;
    int axis;
    i64 vbase;  // the image's first vertex in pos
};

// Where an edge's line crosses the segment, as a fraction of it: L . (dc step, 0, 1) = 0 along x
// (likewise along y). Outside [0, 1], or NaN for a line parallel to the segment: no crossing.
GLRAST_HD float crossing(V3 line, const Segment& s) {
    return -s.step * line.z / (s.axis == 0 ? line.x : line.y);
}

GLRAST_HD int tri_vertex(const AntialiasParams& p, int t, int k) { return p.tri[3 * (i64)t + k]; }

GLRAST_HD bool opposite_signs(float a, float b) { return (a > 0.f && b < 0.f) || (a < 0.f && b > 0.f); }

// Whether triangle u continues a surface across the edge (a, b) whose line is `line`, the
// surface lying on the side own_side of it: u holds both vertices and its third vertex lies
// strictly on the other side.
GLRAST_HD bool continues(const AntialiasParams& p, const Segment& seg, int u, int a, int b, V3 line,
                         float own_side) {
    int third = -1, shared = 0;
    for (int j = 0; j < 3; ++j) {
        int v = tri_vertex(p, u, j);
        if (v == a || v == b) ++shared;
        else third = v;
    }
    if (shared != 2 || third < 0) return false;  // not on the edge, or degenerate (lies on the edge)
    return opposite_signs(own_side, dot3(line, vertex_rel(p, seg.vbase, third, seg.cx, seg.cy)));
}

// The triangle that continues the surface of t across its edge (a, b): of the other triangles
// on the edge, the one of smallest id that continues it; -1 if there is none (a silhouette).
GLRAST_HD int continuation(const AntialiasParams& p, const Segment& seg, int t, int a, int b, V3 line,
                           float own_side) {
    u64 key = edge_key(a, b);
    i64 s = edge_slot(key, p.mask);
    int found = -1;
    for (i64 probe = 0; probe <= p.mask; ++probe, s = (s + 1) & p.mask) {
        u64 k = p.keys[s];
        if (k == AA_EMPTY_KEY) break;
        if (k != key) continue;
        int u = p.tris[s];
        if (u != t && (found < 0 || u < found) && continues(p, seg, u, a, b, line, own_side)) found = u;
    }
    return found;
}

struct Hit {
    int a, b;  // the silhouette edge's vertex indices; a = -1: none
    float dc;  // where the segment crosses it
};

// A bound on the triangles one walk visits: enough for a 1.3M-triangle sphere's outline at 256^2
// (the last pixel before a silhouette of a dense mesh can hold dozens of slivers).
#define AA_MAX_WALK 64
// How far (as a fraction of the segment) a crossing may lie outside where the walk expects it:
// GL decides coverage with its own (snapped) arithmetic, so a pixel centre it covers can lie a
// rounding error outside the triangle's edge line as computed here. Such crossings count, clamped.
#define AA_TOLERANCE 0.0625f

// The silhouette edge the segment crosses, walking from triangle t (which holds the segment's
// start) across edges where the surface continues; end_triangle is what the segment's end shows.
GLRAST_HD Hit find_silhouette(const AntialiasParams& p, const Segment& seg, int t, int end_triangle) {
    const Hit none = {-1, -1, 0.f};
    int ea = -1, eb = -1;  // the edge through which the walk entered t
    float lo = 0.f;        // and where
    for (int walk = 0; walk < AA_MAX_WALK; ++walk) {
        int vi[3];
        V3 v[3];
        for (int k = 0; k < 3; ++k) {
            vi[k] = tri_vertex(p, t, k);
            v[k] = vertex_rel(p, seg.vbase, vi[k], seg.cx, seg.cy);
        }
        // The segment leaves t where it first crosses, from the inside out, one of its edge lines.
        int best = -1;
        float dc = 0.f, own_side = 0.f;
        V3 line = {0.f, 0.f, 0.f};
        for (int k = 0; k < 3; ++k) {
            int k1 = k == 2 ? 0 : k + 1, k2 = k1 == 2 ? 0 : k1 + 1;
            if ((vi[k] == ea && vi[k1] == eb) || (vi[k] == eb && vi[k1] == ea)) continue;
            V3 l = cross3(v[k], v[k1]);
            float inside = dot3(l, v[k2]);  // the sign of the line function on t's side
            // leaving t's side: the line function changes by step * L[axis] from P to Q
            if (!opposite_signs(inside, seg.step * (seg.axis == 0 ? l.x : l.y))) continue;
            float d = crossing(l, seg);
            if (best < 0 || d < dc) { best = k; dc = d; line = l; own_side = inside; }
        }
        // None, or the first crossing beyond Q: the segment ends inside t.
        if (best < 0 || !(dc <= 1.f + AA_TOLERANCE) || !(dc >= lo - AA_TOLERANCE)) return none;
        dc = fminf(fmaxf(dc, 0.f), 1.f);
        int a = vi[best], b = vi[best == 2 ? 0 : best + 1];
        // The surface runs on into the triangle the neighbour pixel shows (no hash lookup needed).
        if (end_triangle >= 0 && continues(p, seg, end_triangle, a, b, line, own_side)) return none;
        int next = continuation(p, seg, t, a, b, line, own_side);
        if (next < 0) {
            float along = seg.axis == 0 ? line.x : line.y, across = seg.axis == 0 ? line.y : line.x;
            if (fabsf(along) < fabsf(across)) return none;  // the edge runs more along the pair than across
            return {a, b, dc};
        }
        t = next; ea = a; eb = b; lo = dc;
    }
    return none;
}

GLRAST_HD Segment segment_from(const AntialiasParams& p, i64 start, i64 end, int axis) {
    PixelIndex px = pixel_index(start, p.height, p.width);
    return {px.col + 0.5f, px.row + 0.5f, end > start ? 1.f : -1.f, axis, px.image * p.verts_per_image};
}

// The pair's two pixels; false where the neighbour is outside the image.
GLRAST_HD bool pair_pixels(const AntialiasParams& p, i64 i, i64* first, i64* second, int* axis) {
    *axis = (int)(i & 1);
    *first = i >> 1;
    PixelIndex px = pixel_index(*first, p.height, p.width);
    if (*axis == 0 ? px.col + 1 >= p.width : px.row + 1 >= p.height) return false;
    *second = *first + (*axis == 0 ? 1 : p.width);
    return true;
}

// ---------------------------------------------------------------------------
// Forward

GLRAST_KERNEL(antialias_pairs, AntialiasParams) {
    p.alpha[i] = 0.f;
    p.edge[2 * i] = -1;
    p.edge[2 * i + 1] = -1;
    i64 first, second;
    int axis;
    if (!pair_pixels(p, i, &first, &second, &axis)) return;
    const float* r1 = p.rast + 4 * first;
    const float* r2 = p.rast + 4 * second;
    int t1 = decode_triangle_id(r1[3]), t2 = decode_triangle_id(r2[3]);
    if (t1 == t2 || t1 >= p.num_tris || t2 >= p.num_tris) return;
    bool second_owns = t1 < 0 || (t2 >= 0 && r2[2] < r1[2]);
    Segment seg = second_owns ? segment_from(p, second, first, axis) : segment_from(p, first, second, axis);
    Hit hit = second_owns ? find_silhouette(p, seg, t2, t1) : find_silhouette(p, seg, t1, t2);
    if (hit.a < 0) return;
    // dc < 0.5: the owner's pixel is blended towards the other; else the other towards the owner.
    bool blend_owner = hit.dc < 0.5f;
    float amount = blend_owner ? 0.5f - hit.dc : hit.dc - 0.5f;
    p.alpha[i] = blend_owner != second_owns ? amount : -amount;
    p.edge[2 * i] = hit.a;
    p.edge[2 * i + 1] = hit.b;
}

// The (up to) four pairs of pixel x: their records, the neighbour pixels, and whether x is
// the pair's first pixel.
struct PixelPairs {
    int count;
    i64 rec[4], nb[4];
    bool first[4];
};

GLRAST_HD void add_pair(PixelPairs* q, i64 rec, i64 nb, bool first) {
    q->rec[q->count] = rec;
    q->nb[q->count] = nb;
    q->first[q->count++] = first;
}

GLRAST_HD PixelPairs pixel_pairs(const AntialiasParams& p, i64 x) {
    PixelIndex px = pixel_index(x, p.height, p.width);
    PixelPairs q;
    q.count = 0;
    if (px.col > 0) add_pair(&q, 2 * (x - 1), x - 1, false);
    if (px.col + 1 < p.width) add_pair(&q, 2 * x, x + 1, true);
    if (px.row > 0) add_pair(&q, 2 * (x - p.width) + 1, x - p.width, false);
    if (px.row + 1 < p.height) add_pair(&q, 2 * x + 1, x + p.width, true);
    return q;
}

// How much pixel x is blended towards its neighbour in this pair (0 if the neighbour is the blended one).
GLRAST_HD float blend_of(float alpha, bool is_first) { return is_first ? fmaxf(alpha, 0.f) : fmaxf(-alpha, 0.f); }

// The blend weights of pixel x: weight[k] of neighbour k, scaled by 1 / max(1, sum) so that they
// never add up past 1 (a pixel under a sub-pixel triangle can be blended by all four of its pairs);
// returns the unscaled sum. out[x] = (1 - sum of weights) color[x] + sum_k weight[k] color[nb k], a
// convex combination of the input colours.
GLRAST_HD float blend_weights(const AntialiasParams& p, const PixelPairs& q, float weight[4]) {
    float total = 0.f;
    for (int k = 0; k < q.count; ++k) {
        weight[k] = blend_of(p.alpha[q.rec[k]], q.first[k]);
        total += weight[k];
    }
    if (total > 1.f)
        for (int k = 0; k < q.count; ++k) weight[k] /= total;
    return total;
}

GLRAST_KERNEL(antialias_blend, AntialiasParams) {
    const int C = p.channels;
    const float* cx = p.color + i * C;
    float* out = p.out + i * C;
    for (int ch = 0; ch < C; ++ch) out[ch] = cx[ch];
    PixelPairs q = pixel_pairs(p, i);
    float weight[4];
    if (!(blend_weights(p, q, weight) > 0.f)) return;  // untouched pixels keep their exact input bits
    float own = 1.f;
    for (int k = 0; k < q.count; ++k) own -= weight[k];
    own = fmaxf(own, 0.f);
    for (int ch = 0; ch < C; ++ch) {
        // A weighted sum (no colour differences, which could overflow), kept within the range of the
        // colours it mixes so that rounding cannot step outside it either.
        float acc = own * cx[ch], lo = cx[ch], hi = cx[ch];
        for (int k = 0; k < q.count; ++k) {
            if (!(weight[k] > 0.f)) continue;
            float cn = p.color[q.nb[k] * C + ch];
            acc += weight[k] * cn;
            lo = fminf(lo, cn);
            hi = fmaxf(hi, cn);
        }
        out[ch] = fminf(fmaxf(acc, lo), hi);
    }
}

// ---------------------------------------------------------------------------
// Backward

GLRAST_KERNEL(antialias_grad_color, AntialiasParams) {
    // out[x] = (1 - sum_k w_k) color[x] + sum_k w_k color[nb k] with the weights of blend_weights, so
    // color[x] receives g[x] (1 - sum_k w_k) from its own output and w g[n] from each neighbour n it
    // is blended into, w being the weight n gives x.
    const int C = p.channels;
    const float* gx = p.grad_out + i * C;
    float* gc = p.grad_color + i * C;
    PixelPairs q = pixel_pairs(p, i);
    float weight[4];
    blend_weights(p, q, weight);
    float own = 1.f;
    for (int k = 0; k < q.count; ++k) own -= weight[k];
    own = fmaxf(own, 0.f);
    for (int ch = 0; ch < C; ++ch) gc[ch] = own * gx[ch];
    for (int k = 0; k < q.count; ++k) {
        if (!(blend_of(p.alpha[q.rec[k]], !q.first[k]) > 0.f)) continue;  // x is not blended into nb k
        PixelPairs qn = pixel_pairs(p, q.nb[k]);
        float wn[4];
        blend_weights(p, qn, wn);
        for (int j = 0; j < qn.count; ++j) {
            if (qn.nb[j] != i || !(wn[j] > 0.f)) continue;
            const float* gn = p.grad_out + q.nb[k] * C;
            for (int ch = 0; ch < C; ++ch) gc[ch] += wn[j] * gn[ch];
        }
    }
}

struct V3d { double x, y, z; };

GLRAST_HD V3d cross3d(V3 a, V3d b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }

GLRAST_HD void add_vertex_grad(const AntialiasParams& p, const Segment& seg, int v, int exponent, V3d g) {
    // From the centred homogeneous coordinates (X - w cx, Y - w cy, w), computed from pos / 2^exponent,
    // back to pos's (x, y, w).
    double gX = g.x * (0.5 * p.width), gY = g.y * (0.5 * p.height);
    double gw = g.z - seg.cx * g.x - seg.cy * g.y + gX + gY;
    double scale = exponent == 0 ? 1.0 : ldexp(1.0, -exponent);
    i64 base = 4 * (seg.vbase + v);
    accumulate(p.grad_pos, base, saturate_f32(gX * scale));
    accumulate(p.grad_pos, base + 1, saturate_f32(gY * scale));
    accumulate(p.grad_pos, base + 3, saturate_f32(gw * scale));
}

// d out[target] / d a, a the amount by which target is blended towards source (one of its
// neighbours), dotted with the output gradient g: with the weights w_k of blend_weights and their
// unscaled sum A, out = c + sum_k w_k (c_k - c), so the derivative is G(source) while A <= 1 and
// (G(source) - sum_k w_k G(k)) / A beyond, G(m) = g . (c_m - c). In double: colour differences of
// floats near the float limit would overflow.
GLRAST_HD double amount_gradient(const AntialiasParams& p, i64 target, i64 source) {
    const int C = p.channels;
    const float* g = p.grad_out + target * C;
    const float* c = p.color + target * C;
    PixelPairs q = pixel_pairs(p, target);
    float weight[4];
    float total = blend_weights(p, q, weight);
    double result = 0.0;
    for (int ch = 0; ch < C; ++ch) result += (double)g[ch] * ((double)p.color[source * C + ch] - c[ch]);
    if (!(total > 1.f)) return result;
    for (int k = 0; k < q.count; ++k) {
        if (!(weight[k] > 0.f)) continue;
        double gk = 0.0;
        for (int ch = 0; ch < C; ++ch) gk += (double)g[ch] * ((double)p.color[q.nb[k] * C + ch] - c[ch]);
        result -= weight[k] * gk;
    }
    return result / total;
}

GLRAST_SCATTER_KERNEL(antialias_grad_pos, AntialiasParams) {
    int a = p.edge[2 * i], b = p.edge[2 * i + 1];
    if (a < 0) return;
    i64 first, second;
    int axis;
    if (!pair_pixels(p, i, &first, &second, &axis)) return;  // never recorded; guards a forged record
    // dc measured from the first pixel: the first is the blended one when dc < 0.5, and
    // amount = |0.5 - dc| either way.
    Segment seg = segment_from(p, first, second, axis);
    int ea, eb;
    V3 va = vertex_rel(p, seg.vbase, a, seg.cx, seg.cy, &ea), vb = vertex_rel(p, seg.vbase, b, seg.cx, seg.cy, &eb);
    V3 line = cross3(va, vb);
    float dc = crossing(line, seg);
    if (!(dc > 0.f && dc < 1.f)) return;  // the blend saturates at the pixel centres
    bool blend_first = dc < 0.5f;
    i64 target = blend_first ? first : second, source = blend_first ? second : first;
    double g_amount = amount_gradient(p, target, source);
    double g_dc = (blend_first ? -g_amount : g_amount) * p.pos_gradient_boost;
    if (g_dc == 0.0) return;
    // dc = -L.z / L[axis] with step +1.
    double along = axis == 0 ? line.x : line.y;
    double g_z = -g_dc / along, g_along = -dc / along * g_dc;
    V3d g_line = {axis == 0 ? g_along : 0.0, axis == 1 ? g_along : 0.0, g_z};
    // L = A x B: d(L . g)/dA = B x g, d(L . g)/dB = g x A = -(A x g).
    V3d ga = cross3d(vb, g_line), gb = cross3d(va, g_line);
    add_vertex_grad(p, seg, a, ea, ga);
    add_vertex_grad(p, seg, b, eb, {-gb.x, -gb.y, -gb.z});
}
