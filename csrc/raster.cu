// rasterize, after the GL pass: the fixed-function rasterizer has decided
// coverage and depth and written one triangle id per pixel; these kernels turn
// ids into rast = (u, v, z/w, id+1) and rast_db = (du/dX, du/dY, dv/dX, dv/dY),
// and run that computation backwards.
//
// Per covered pixel, the barycentrics come in closed form from the pixel
// centre (xn, yn in NDC) and the clip-space vertices p_k = (x, y, z, w):
//     L_k = c_k + a_k xn + b_k yn,   (k, j, l) in {(0,1,2), (1,2,0), (2,0,1)}
//     c_k = x_j y_l - x_l y_j,  a_k = y_j w_l - y_l w_j,  b_k = x_l w_j - x_j w_l
//     S = sum L_k,  u = L_0 / S,  v = L_1 / S,  z/w = sum L_k z_k / sum L_k w_k,
//     du/dxn = (a_0 - u Sa) / S,  du/dyn = (b_0 - u Sb) / S   (Sa = sum a_k, Sb = sum b_k)
// (the L_k are the clip-space barycentrics up to a common factor, so the result
// is perspective-correct), and du/dX = du/dxn * 2/W, du/dY = du/dyn * 2/H.
// The closed form runs in double (exact products of the float inputs, no overflow for w near the
// float limit); a covered pixel whose barycentrics come out negative (GL's snapped coverage of a
// sliver) gets them clamped into the triangle (see barycentrics()), and the backward pass
// differentiates exactly what is returned.
#include "common.h"

struct RasterParams {
    const float* pos;        // [N, V, 4] (instanced) or [V, 4] (range mode)
    const int* tri;          // [T, 3]
    const int* ids;          // forward: [N, H, W] triangle id + 1 from GL, 0 = empty
    float* rast;             // forward: output [N, H, W, 4]; backward: input
    float* rast_db;          // forward: output [N, H, W, 4] or null
    const float* grad_rast;  // backward: [N, H, W, 4]; channels 0, 1 used
    const float* grad_db;    // backward: [N, H, W, 4] or null
    Accumulator grad_pos;    // backward: slots shaped like pos
    int height, width;
    int images;              // N
    int verts_per_image;     // V in instanced mode, 0 in range mode
    int num_tris;            // T: ids outside [1, T] are treated as empty
};
GLRAST_LAYOUT(RasterParams, pos, tri, ids, rast, rast_db, grad_rast, grad_db, grad_pos, height, width, images,
              verts_per_image, num_tris)

// The GL pass's input (see raster_corners).
struct CornerParams {
    const float* pos;        // [N, V, 4] (instanced) or [V, 4] (range mode)
    const int* tri;          // [T, 3]
    const int* kept;         // the triangles to gather, in order (raster_cull's survivors); null: all
    float* corners;          // output: [3 n, 4] for n triangles
    int first;               // gather triangles first, ..., first + count - 1 (of kept when given)
    int count;
    int image;               // which position set of pos (instanced mode)
    int verts_per_image;     // V in instanced mode, 0 in range mode
};
GLRAST_LAYOUT(CornerParams, pos, tri, kept, corners, first, count, image, verts_per_image)

// Which triangles can produce a fragment (see raster_cull), listed in order: each element of the
// launch handles a block of CULL_BLOCK triangles; raster_compact then joins the blocks' lists.
#define GLRAST_CULL_BLOCK 16
GLRAST_CONSTANTS(cull, GLRAST_CULL_BLOCK)
struct CullParams {
    const float* pos;        // as in CornerParams
    const int* tri;          // [T, 3]
    float* window;           // raster_window's output [V, 2], raster_cull's input
    int* kept;               // raster_cull's output [T]: block b's survivors from b * CULL_BLOCK on, in order
    int* counts;             // raster_cull's output [blocks]: how many survive in each block
    const i64* offsets;      // raster_compact's input [blocks]: where block b's list goes in `out`
    int* out;                // raster_compact's output: all blocks' lists, joined
    int num_tris, image, verts_per_image;
    int height, width;
    float margin;            // pixels by which GL's snapped vertices may differ from the exact ones
    int block_stride;        // raster_cull: element i tests block i * block_stride (> 1: a sample)
};
GLRAST_LAYOUT(CullParams, pos, tri, window, kept, counts, offsets, out, num_tris, image, verts_per_image, height, width,
              margin, block_stride)

// After the GL pass of one image drawn in slices: the visible triangle of each pixel.
struct MergeParams {
    const int* ids;          // [slices, H W]: GL's id + 1 per slice (an index into kept, when given)
    const float* depth;      // [slices, H W]: GL's depth per slice (1 where empty); null for one slice
    const int* kept;         // triangle of each drawn index (raster_cull's survivors), or null: the identity
    int* out;                // [H W]: triangle id + 1, 0 = empty
    int slices;
    i64 pixels;              // H W
};
GLRAST_LAYOUT(MergeParams, ids, depth, kept, out, slices, pixels)

struct Setup {
    i64 vi[3];                         // vertex indices (within pos)
    double x[3], y[3], z[3], w[3];
    double a[3], b[3], L[3];
    double xn, yn, S;
};

// Loads triangle t for pixel i and evaluates the L_k; false if S is 0 or not finite. In double: the
// products of two floats are exact there and cannot overflow (w = 3e38) or underflow, and the L_k of
// a sliver, which nearly cancel, keep their accuracy.
GLRAST_HD bool setup(const RasterParams& p, i64 i, int t, Setup& s) {
    PixelIndex px = pixel_index(i, p.height, p.width);
    s.xn = (px.col + 0.5) * (2.0 / p.width) - 1.0;
    s.yn = (px.row + 0.5) * (2.0 / p.height) - 1.0;
    i64 vbase = px.image * p.verts_per_image;
    for (int k = 0; k < 3; ++k) {
        s.vi[k] = vbase + p.tri[3 * (i64)t + k];
        const float* pk = p.pos + 4 * s.vi[k];
        s.x[k] = pk[0]; s.y[k] = pk[1]; s.z[k] = pk[2]; s.w[k] = pk[3];
    }
    for (int k = 0; k < 3; ++k) {
        int j = (k + 1) % 3, l = (k + 2) % 3;
        double c = s.x[j] * s.y[l] - s.x[l] * s.y[j];
        s.a[k] = s.y[j] * s.w[l] - s.y[l] * s.w[j];
        s.b[k] = s.x[l] * s.w[j] - s.x[j] * s.w[l];
        s.L[k] = c + s.a[k] * s.xn + s.b[k] * s.yn;
    }
    s.S = s.L[0] + s.L[1] + s.L[2];
    return fabs(s.S) > 0.0 && isfinite(s.S);
}

// The returned barycentrics: the closed form's L_k / S, or, where GL covers a pixel centre that the
// closed form puts outside the triangle (GL decides coverage with its own snapped arithmetic, which
// matters most for slivers), the nearest point of the triangle in the sense of clamping the negative
// ones to 0 and renormalising: (u, v, 1 - u - v) always lie in the triangle, so z/w lies between the
// vertices' (for w > 0).
struct Barycentrics {
    double raw[3];  // L_k / S
    double bc[3];   // what rast holds: raw, or clamped and renormalised
    double sum;     // sum of the clamped raw values (1 where nothing is clamped)
    bool clamped;
};

GLRAST_HD Barycentrics barycentrics(const Setup& s) {
    Barycentrics B;
    B.clamped = false;
    for (int k = 0; k < 3; ++k) {
        B.raw[k] = s.L[k] / s.S;
        B.clamped = B.clamped || !(B.raw[k] >= 0.0);
    }
    B.sum = 1.0;
    if (!B.clamped) {
        for (int k = 0; k < 3; ++k) B.bc[k] = B.raw[k];
        return B;
    }
    B.sum = 0.0;
    for (int k = 0; k < 3; ++k) B.sum += fmax(B.raw[k], 0.0);
    for (int k = 0; k < 3; ++k) B.bc[k] = fmax(B.raw[k], 0.0) / B.sum;
    return B;
}

// Before the GL pass: the clip-space corners of triangles in order (corners[3j + k] = pos of vertex
// tri[t][k] of position set `image`, for the j-th triangle t gathered). The GL pass draws them as a
// plain triangle list: llvmpipe runs that faster than an indexed draw, whose vertex cache only adds
// work when every vertex shader invocation is a single attribute copy.
//
// A corner of huge or tiny magnitude is divided by a power of two (see rescale_exponent): a
// homogeneous point scaled by a positive factor is the same point, and so are the segments between
// corners that GL's clipping cuts, but GL's clip arithmetic (x + w, ...) overflows near the float
// limit and may flush denormals to zero.
// fmaxf(a, b) for a, b >= 0 or NaN (the larger, ignoring a NaN), inline: the host compiler calls
// libm for fmaxf, fmin and fmax, which made up most of these kernels' time.
GLRAST_HD float max_nonnegative(float a, float b) { return a > b || b != b ? a : b; }
GLRAST_HD double min_f64(double a, double b) { return a < b ? a : b; }
GLRAST_HD double max_f64(double a, double b) { return a > b ? a : b; }

GLRAST_HD void load_corner(const float* pos, i64 v, float* dst) {
    const float* src = pos + 4 * v;
    float m = max_nonnegative(max_nonnegative(fabsf(src[0]), fabsf(src[1])),
                              max_nonnegative(fabsf(src[2]), fabsf(src[3])));
    int e = rescale_exponent(m);
    for (int k = 0; k < 4; ++k) dst[k] = e == 0 ? src[k] : ldexpf(src[k], -e);
}

// The corner gather's loads of tri and pos land anywhere in them (kept triangles of a fine mesh): on
// the CPU each element of the launch prefetches, once per triangle, the corners of the triangle
// CORNER_AHEAD on, whose row of tri it prefetched CORNER_AHEAD triangles before.
#define GLRAST_CORNER_AHEAD 16
GLRAST_HD i64 corner_triangle(const CornerParams& p, i64 j) { return p.kept ? p.kept[p.first + j] : p.first + j; }

GLRAST_KERNEL(raster_corners, CornerParams) {
    i64 j = i / 3, t = corner_triangle(p, j);
    if (i == 3 * j && j + 2 * GLRAST_CORNER_AHEAD < p.count) {
        prefetch(p.tri + 3 * corner_triangle(p, j + 2 * GLRAST_CORNER_AHEAD));
        const int* ahead = p.tri + 3 * corner_triangle(p, j + GLRAST_CORNER_AHEAD);
        for (int k = 0; k < 3; ++k) prefetch(p.pos + 4 * ((i64)p.image * p.verts_per_image + ahead[k]));
    }
    load_corner(p.pos, (i64)p.image * p.verts_per_image + p.tri[3 * t + (i - 3 * j)], p.corners + 4 * i);
}

// Before the GL pass on the CPU, where llvmpipe spends ~0.3 us of one thread per triangle before
// rasterizing: keep[t] = 0 for a triangle that provably gives no fragment, which lets the draw skip
// it without changing any pixel (most triangles of a fine mesh at a low resolution cover no pixel
// centre). GL covers centre P only if P lies in the triangle of its snapped vertices, each within
// `margin` (in x and in y) of the exact one; that triangle lies inside the exact triangle grown by the
// square [-margin, margin]^2, so P can be covered only if the square around P meets the exact triangle.
// Two convex shapes meet unless one of their edge normals separates them: the square's (the bounding
// box test) or the triangle's (each edge function, grown by margin times its gradient's 1-norm). Only
// triangles inside the view volume are tested (any clipping, w <= 0 or non-finite corners: kept), and
// those whose bounding box holds at most MAX_CENTRES pixel centres (larger ones are kept: they rarely
// miss every centre). Edge functions are evaluated in double, far below the margin's error.
#define GLRAST_CULL_MAX_CENTRES 4
#define GLRAST_CULL_PREFETCH 2
// floor and ceil of x > -1 (x - 0.5 of a window coordinate grown by the margin), exact, without libm.
GLRAST_HD i64 floor_above_minus_one(double x) { i64 t = (i64)x; return t - (x < (double)t); }
GLRAST_HD i64 ceil_above_minus_one(double x) { i64 t = (i64)x; return t + (x > (double)t); }

// Window coordinates minus 0.5 of each vertex of position set `image`, so that pixel centres sit at
// integers (col, row), rounded to float (the margin covers the rounding: |X| <= W); OUTSIDE for a
// vertex not strictly inside the view volume (any clipping, w <= 0 or non-finite corners), whose
// triangles are kept. Computed once per vertex for raster_cull to read, instead of transforming every
// corner of every triangle: a closed mesh has half as many vertices as triangles, and the conversions
// and divisions were most of the cull's time (1.3M triangles at 256² on one thread: 52 -> 30 ms, 4 of
// them this pass).
#define GLRAST_CULL_OUTSIDE -2.0f  // X > -1 inside
GLRAST_KERNEL(raster_window, CullParams) {
    float c[4];
    load_corner(p.pos, (i64)p.image * p.verts_per_image + i, c);
    float* out = p.window + 2 * i;
    if (!(c[3] > 0.f && fabsf(c[0]) <= c[3] && fabsf(c[1]) <= c[3] && fabsf(c[2]) <= c[3])) {
        out[0] = GLRAST_CULL_OUTSIDE;
        out[1] = 0.f;
        return;
    }
    double inv = 1.0 / c[3];
    out[0] = (float)(((double)c[0] * inv + 1.0) * (0.5 * p.width) - 0.5);
    out[1] = (float)(((double)c[1] * inv + 1.0) * (0.5 * p.height) - 0.5);
}

// x, y: the window coordinates of the triangle's corners (raster_window's).
GLRAST_HD bool may_cover(const CullParams& p, const float x[3], const float y[3]) {
    double X[3], Y[3];
    for (int k = 0; k < 3; ++k) {
        if (!(x[k] > -1.f)) return true;
        X[k] = x[k];
        Y[k] = y[k];
    }
    double m = p.margin;
    // Candidate centres within the bounding box grown by the margin (its corners lie above -0.5 - m).
    i64 c0 = ceil_above_minus_one(min_f64(min_f64(X[0], X[1]), X[2]) - m);
    i64 c1 = floor_above_minus_one(max_f64(max_f64(X[0], X[1]), X[2]) + m);
    i64 r0 = ceil_above_minus_one(min_f64(min_f64(Y[0], Y[1]), Y[2]) - m);
    i64 r1 = floor_above_minus_one(max_f64(max_f64(Y[0], Y[1]), Y[2]) + m);
    if (c1 < c0 || r1 < r0) return false;
    if ((c1 - c0 + 1) * (r1 - r0 + 1) > GLRAST_CULL_MAX_CENTRES) return true;
    double ex[3], ey[3], em[3];
    for (int k = 0; k < 3; ++k) {
        int j = k == 2 ? 0 : k + 1;
        ex[k] = X[j] - X[k];
        ey[k] = Y[j] - Y[k];
        em[k] = m * (fabs(ex[k]) + fabs(ey[k]));
    }
    bool keep = false;
    for (i64 r = r0; r <= r1; ++r) {
        for (i64 c = c0; c <= c1; ++c) {
            // Either winding: P may be covered if every grown edge function has the same sign.
            bool ccw = true, cw = true;
            for (int k = 0; k < 3; ++k) {
                double e = ex[k] * ((double)r - Y[k]) - ey[k] * ((double)c - X[k]);
                ccw = ccw && e >= -em[k];
                cw = cw && e <= em[k];
            }
            keep = keep || ccw || cw;
        }
    }
    return keep;
}

// Whether [lo, hi] holds an integer (|hi| < 2^31), exactly: floor(hi) >= lo, without libm.
GLRAST_HD bool holds_integer(float lo, float hi) {
    int t = (int)hi;
    return (float)(t - (hi < (float)t)) >= lo;
}

GLRAST_KERNEL(raster_cull, CullParams) {
    i64 begin = i * p.block_stride * GLRAST_CULL_BLOCK;
    int count = (int)(begin + GLRAST_CULL_BLOCK < p.num_tris ? GLRAST_CULL_BLOCK : p.num_tris - begin);
    // The window coordinates of the corners of the block GLRAST_CULL_PREFETCH ahead, which a fine mesh
    // scatters over memory: on the CPU their cache misses took most of the cull's time (measured when
    // the cull still read pos: 1.3M triangles, 208 -> 62-110 ms on one thread; one and four blocks
    // ahead measured the same within the noise).
    i64 next = begin + GLRAST_CULL_PREFETCH * p.block_stride * GLRAST_CULL_BLOCK;
    i64 next_end = next + GLRAST_CULL_BLOCK < p.num_tris ? next + GLRAST_CULL_BLOCK : p.num_tris;
    for (i64 k = 3 * next; k < 3 * next_end; ++k) prefetch(p.window + 2 * p.tri[k]);
    // First the bounding box test in float, over the whole block at once (the host compiler turns
    // it into vector code): it drops only triangles whose box grown by the margin holds no pixel centre,
    // with the margin grown by float's rounding of the box (<= 2^-24 (W + 3)), so that may_cover
    // would drop each of them too; may_cover then decides the others (1.3M triangles at 256² on one
    // thread: 26 -> 19 ms).
    float x[3][GLRAST_CULL_BLOCK], y[3][GLRAST_CULL_BLOCK];  // corner-major: the loop below vectorises
    for (int j = 0; j < GLRAST_CULL_BLOCK; ++j) {
        for (int k = 0; k < 3; ++k) {
            i64 v = j < count ? p.tri[3 * (begin + j) + k] : -1;
            x[k][j] = v < 0 ? 0.f : p.window[2 * v];
            y[k][j] = v < 0 ? 0.f : p.window[2 * v + 1];
        }
    }
    float m = (float)(p.margin + ((p.width > p.height ? p.width : p.height) + 3) * 0x1p-21);
    bool boxed[GLRAST_CULL_BLOCK];
    for (int j = 0; j < GLRAST_CULL_BLOCK; ++j) {
        float x0 = x[0][j] < x[1][j] ? x[0][j] : x[1][j], x1 = x[0][j] < x[1][j] ? x[1][j] : x[0][j];
        float y0 = y[0][j] < y[1][j] ? y[0][j] : y[1][j], y1 = y[0][j] < y[1][j] ? y[1][j] : y[0][j];
        x0 = x0 < x[2][j] ? x0 : x[2][j];
        x1 = x1 > x[2][j] ? x1 : x[2][j];
        y0 = y0 < y[2][j] ? y0 : y[2][j];
        y1 = y1 > y[2][j] ? y1 : y[2][j];
        boxed[j] = holds_integer(x0 - m, x1 + m) & holds_integer(y0 - m, y1 + m);
    }
    int n = 0;
    for (int j = 0; j < count; ++j) {
        float cx[3] = {x[0][j], x[1][j], x[2][j]}, cy[3] = {y[0][j], y[1][j], y[2][j]};
        if (boxed[j] && may_cover(p, cx, cy)) p.kept[begin + n++] = (int)(begin + j);
    }
    p.counts[i] = n;
}

GLRAST_KERNEL(raster_compact, CullParams) {
    const int* src = p.kept + i * GLRAST_CULL_BLOCK;
    for (int k = 0; k < p.counts[i]; ++k) p.out[p.offsets[i] + k] = src[k];
}

// Pixel i of one image drawn in slices (consecutive runs of the triangle list, each into its own
// target): the fragment with the smallest depth over the slices, the earliest slice on equal depth,
// which is what one draw of the whole list gives with GL's LESS test (in-order submission: on equal
// depth the earlier triangle stays). An empty pixel holds the cleared depth 1, which no fragment
// reaches (LESS against the clear value), so it never wins over a covered one. Drawn indices become
// triangle ids through kept.
GLRAST_KERNEL(raster_merge, MergeParams) {
    int best = p.ids[i];
    if (p.depth) {
        float z = p.depth[i];
        for (int s = 1; s < p.slices; ++s) {
            float zs = p.depth[s * p.pixels + i];
            if (zs < z) {
                z = zs;
                best = p.ids[s * p.pixels + i];
            }
        }
    }
    p.out[i] = best > 0 && p.kept ? p.kept[best - 1] + 1 : best;
}

GLRAST_KERNEL(raster_fwd, RasterParams) {
    if (i + GLRAST_PIXEL_AHEAD < (i64)p.images * p.height * p.width)
        prefetch_tri_row(p.tri, p.ids[i + GLRAST_PIXEL_AHEAD] - 1, p.num_tris);
    float* r = p.rast + 4 * i;
    float* db = p.rast_db ? p.rast_db + 4 * i : nullptr;
    int id1 = p.ids[i];
    r[0] = r[1] = r[2] = r[3] = 0.f;
    if (db) db[0] = db[1] = db[2] = db[3] = 0.f;
    if (id1 <= 0 || id1 > p.num_tris) return;
    r[3] = encode_triangle_id(id1);
    Setup s;
    // A non-finite or degenerate triangle keeps its id, with zero barycentrics.
    if (!setup(p, i, id1 - 1, s)) return;
    Barycentrics B = barycentrics(s);
    r[0] = (float)B.bc[0];
    r[1] = (float)B.bc[1];
    r[2] = saturate_f32((B.bc[0] * s.z[0] + B.bc[1] * s.z[1] + B.bc[2] * s.z[2]) /
                        (B.bc[0] * s.w[0] + B.bc[1] * s.w[1] + B.bc[2] * s.w[2]));
    if (!db) return;
    // The triangle's own screen-space derivatives (of the unclamped barycentrics), saturated: a
    // sliver's are huge.
    double Sa = s.a[0] + s.a[1] + s.a[2], Sb = s.b[0] + s.b[1] + s.b[2];
    double inv = 1.0 / s.S, sx = 2.0 / p.width, sy = 2.0 / p.height;
    db[0] = saturate_f32((s.a[0] - B.raw[0] * Sa) * inv * sx);
    db[1] = saturate_f32((s.b[0] - B.raw[0] * Sb) * inv * sy);
    db[2] = saturate_f32((s.a[1] - B.raw[1] * Sa) * inv * sx);
    db[3] = saturate_f32((s.b[1] - B.raw[1] * Sb) * inv * sy);
}

GLRAST_SCATTER_KERNEL(raster_grad, RasterParams) {
    prefetch_rast_tri_row(p.tri, p.num_tris, p.rast, i, (i64)p.images * p.height * p.width);
    int t = decode_triangle_id(p.rast[4 * i + 3]);
    if (t < 0 || t >= p.num_tris) return;
    const float* gr = p.grad_rast + 4 * i;
    double gu = gr[0], gv = gr[1];
    double gux = 0.0, guy = 0.0, gvx = 0.0, gvy = 0.0;
    if (p.grad_db) {
        double sx = 2.0 / p.width, sy = 2.0 / p.height;
        const float* gd = p.grad_db + 4 * i;
        gux = gd[0] * sx; guy = gd[1] * sy; gvx = gd[2] * sx; gvy = gd[3] * sy;  // w.r.t. xn, yn
    }
    if (gu == 0.0 && gv == 0.0 && gux == 0.0 && guy == 0.0 && gvx == 0.0 && gvy == 0.0) return;
    Setup s;
    if (!setup(p, i, t, s)) return;
    Barycentrics B = barycentrics(s);
    const double* a = s.a;
    const double* b = s.b;
    double inv = 1.0 / s.S, inv2 = inv * inv;
    double Sa = a[0] + a[1] + a[2], Sb = b[0] + b[1] + b[2];
    double u = B.raw[0], v = B.raw[1];

    // Gradients w.r.t. the raw barycentrics L_k / S, through the clamp where it applies:
    // bc_k = max(raw_k, 0) / sum.
    double graw[3] = {gu, gv, 0.0};
    if (B.clamped) {
        double mean = (gu * B.bc[0] + gv * B.bc[1]) / B.sum;
        for (int k = 0; k < 3; ++k) graw[k] = B.raw[k] > 0.f ? graw[k] / B.sum - mean : 0.0;
    }
    // Gradients w.r.t. the intermediate quantities L_k, a_k, b_k.
    double gS = -(graw[0] * u + graw[1] * v + graw[2] * B.raw[2]) * inv
              - (gux * a[0] + guy * b[0] + gvx * a[1] + gvy * b[1]) * inv2
              + 2.0 * ((gux * Sa + guy * Sb) * u + (gvx * Sa + gvy * Sb) * v) * inv2;
    double gLk[3] = {graw[0] * inv - (gux * Sa + guy * Sb) * inv2 + gS,
                     graw[1] * inv - (gvx * Sa + gvy * Sb) * inv2 + gS,
                     graw[2] * inv + gS};
    double gSa = -(gux * u + gvx * v) * inv;
    double gSb = -(guy * u + gvy * v) * inv;
    double gAk[3] = {gux * inv + gSa, gvx * inv + gSa, gSa};
    double gBk[3] = {guy * inv + gSb, gvy * inv + gSb, gSb};

    const double* x = s.x;
    const double* y = s.y;
    const double* w = s.w;
    double gx[3] = {0.0, 0.0, 0.0}, gy[3] = {0.0, 0.0, 0.0}, gw[3] = {0.0, 0.0, 0.0};
    for (int k = 0; k < 3; ++k) {
        int j = (k + 1) % 3, l = (k + 2) % 3;
        double gc = gLk[k];
        double ga = gAk[k] + s.xn * gLk[k];
        double gb = gBk[k] + s.yn * gLk[k];
        // c = x_j y_l - x_l y_j
        gx[j] += gc * y[l]; gy[l] += gc * x[j]; gx[l] -= gc * y[j]; gy[j] -= gc * x[l];
        // a = y_j w_l - y_l w_j
        gy[j] += ga * w[l]; gw[l] += ga * y[j]; gy[l] -= ga * w[j]; gw[j] -= ga * y[l];
        // b = x_l w_j - x_j w_l
        gx[l] += gb * w[j]; gw[j] += gb * x[l]; gx[j] -= gb * w[l]; gw[l] -= gb * x[j];
    }
    for (int k = 0; k < 3; ++k) {
        accumulate(p.grad_pos, 4 * s.vi[k] + 0, saturate_f32(gx[k]));
        accumulate(p.grad_pos, 4 * s.vi[k] + 1, saturate_f32(gy[k]));
        accumulate(p.grad_pos, 4 * s.vi[k] + 3, saturate_f32(gw[k]));
    }
}
