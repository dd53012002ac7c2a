// texture: filtered texture lookups (2D and cube maps) with mipmaps, their
// backward pass, and the mip pyramid (construction and its gradient).
//
// Conventions (see glrast/texturing.py for the user-facing description):
// * 2D: texel (row y, column x) has its centre at s = (x + 0.5) / w,
//   t = (y + 0.5) / h; bilinear filtering works on x = s w - 0.5, y = t h - 0.5.
// * Cube: faces +X, -X, +Y, -Y, +Z, -Z with OpenGL's (sc, tc, ma) per face;
//   s = (sc / ma + 1) / 2 runs along a face's width, t = (tc / ma + 1) / 2
//   along its height. Taps off a face continue on the adjacent face; the one
//   tap beyond a cube corner is the mean of the other three.
// * Level k of the pyramid has sides max(1, w >> k) x max(1, h >> k); levels
//   1..last live one after another in `pyr` (offsets in level_offset).
#include "common.h"

#define TEX_MAX_LEVELS 32

enum { FILTER_NEAREST = 0, FILTER_LINEAR = 1, FILTER_MIP_NEAREST = 2, FILTER_MIP_LINEAR = 3 };
enum { BOUNDARY_WRAP = 0, BOUNDARY_CLAMP = 1, BOUNDARY_ZERO = 2, BOUNDARY_CUBE = 3 };
GLRAST_CONSTANTS(texture_modes, FILTER_NEAREST, FILTER_LINEAR, FILTER_MIP_NEAREST, FILTER_MIP_LINEAR, BOUNDARY_WRAP,
                 BOUNDARY_CLAMP, BOUNDARY_ZERO, BOUNDARY_CUBE, TEX_MAX_LEVELS)

struct TextureParams {
    const float* tex;        // level 0: [Nt, h, w, C] or [Nt, 6, h, h, C]
    const float* pyr;        // levels 1..last packed, each [Nt, (6,) h_k, w_k, C]; null without mipmaps
    const float* uv;         // [N, H, W, 2] (s, t) or [N, H, W, 3] cube direction
    const float* uv_da;      // [N, H, W, 4] or [N, H, W, 6] (cube), or null
    const float* bias;       // [N, H, W] or null
    float* out;              // forward: [N, H, W, C]
    const float* grad_out;   // backward: [N, H, W, C]
    Accumulator grad_tex;    // backward: slots shaped like tex, or data = null
    Accumulator grad_pyr;    // backward: slots shaped like pyr (levels up to last), or data = null
    float* grad_uv;          // backward: like uv, or null
    float* grad_uv_da;       // backward: like uv_da, or null
    float* grad_bias;        // backward: like bias, or null
    i64 level_offset[TEX_MAX_LEVELS];  // first float of level k in pyr (k >= 1)
    i64 pixels_per_image;    // H * W
    int image_width;         // W
    int tex_batch;           // Nt: 1 broadcasts over the N images
    int height, width;       // level 0 size (a cube face is height x height)
    int channels;            // C
    int last_level;          // highest level used (0 without mipmaps)
    int filter;              // FILTER_*
    int boundary;            // BOUNDARY_*
};
GLRAST_LAYOUT(TextureParams, tex, pyr, uv, uv_da, bias, out, grad_out, grad_tex, grad_pyr, grad_uv, grad_uv_da,
              grad_bias, level_offset, pixels_per_image, image_width, tex_batch, height, width, channels, last_level,
              filter, boundary)

// ---------------------------------------------------------------------------
// Cube faces: a face's major axis m and the axes that give sc and tc, each with
// its sign, so that (sc, tc, ma) = (ss d[s], st d[t], sm d[m]) for a direction d
// whose major axis is m (OpenGL's table: +X: (-z, -y, x), -X: (z, -y, -x),
// +Y: (x, z, y), -Y: (x, -z, -y), +Z: (x, -y, z), -Z: (-x, -y, -z)).

struct FaceAxes {
    int m, s, t;
    float sm, ss, st;
};

GLRAST_HD FaceAxes face_axes(int face) {
    switch (face) {
        case 0: return {0, 2, 1, 1.f, -1.f, -1.f};
        case 1: return {0, 2, 1, -1.f, 1.f, -1.f};
        case 2: return {1, 0, 2, 1.f, 1.f, 1.f};
        case 3: return {1, 0, 2, -1.f, 1.f, -1.f};
        case 4: return {2, 0, 1, 1.f, 1.f, -1.f};
        default: return {2, 0, 1, -1.f, -1.f, -1.f};
    }
}

// The face a direction points at: the largest |component| wins, ties go to x, then y.
GLRAST_HD int cube_face(const float d[3]) {
    float ax = fabsf(d[0]), ay = fabsf(d[1]), az = fabsf(d[2]);
    if (ax >= ay && ax >= az) return d[0] > 0.f ? 0 : 1;
    if (ay >= az) return d[1] > 0.f ? 2 : 3;
    return d[2] > 0.f ? 4 : 5;
}

GLRAST_HD int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// floor of a float known to lie well inside the int range (texel coordinates and
// levels here are bounded); cheaper than floorf where the host build has no
// SSE4.1 rounding instruction.
GLRAST_HD int floor_int(float x) {
    int i = (int)x;
    return (float)i > x ? i - 1 : i;
}

// Offset (in floats, within one image of a cube level of side n) of texel
// (ix, iy) of `face`, where at most one of ix, iy may lie one step off the
// face: such a texel is the edge texel of the adjacent face that touches it.
// The texel centre is folded over the cube edge (the part beyond the edge is
// turned onto the adjacent face) and looked up there.
GLRAST_HD i64 cube_texel(int face, int ix, int iy, int n, int channels) {
    if (ix < 0 || ix >= n || iy < 0 || iy >= n) {
        float inv = 1.f / (float)n;
        float sc = fminf(fmaxf((2 * ix + 1) * inv - 1.f, -1.f), 1.f);
        float tc = fminf(fmaxf((2 * iy + 1) * inv - 1.f, -1.f), 1.f);
        FaceAxes a = face_axes(face);
        float d[3];
        d[a.m] = a.sm * (1.f - inv);
        d[a.s] = a.ss * sc;
        d[a.t] = a.st * tc;
        face = cube_face(d);
        FaceAxes b = face_axes(face);
        float ma = b.sm * d[b.m];
        ix = clamp_int(floor_int((b.ss * d[b.s] / ma + 1.f) * 0.5f * n), 0, n - 1);
        iy = clamp_int(floor_int((b.st * d[b.t] / ma + 1.f) * 0.5f * n), 0, n - 1);
    }
    return (((i64)face * n + iy) * n + ix) * channels;
}

// ---------------------------------------------------------------------------
// Per-pixel set-up shared by the forward and backward kernels: the sample's
// texture coordinates and the level(s) it reads.

struct Lookup {
    bool valid;              // false: output 0, no gradient (non-finite uv, zero cube direction)
    float s, t;              // 2D: uv; cube: face coordinates in [0, 1]
    int face;                // cube only
    FaceAxes ax;             // cube only
    float us, ut, ma;        // cube only: sc / ma, tc / ma, ma
    float J[4];              // LOD Jacobian in level-0 texels: (dx/dX, dx/dY, dy/dX, dy/dY)
    bool interior;           // level strictly inside (0, last): level gradients exist
    int lv0, lv1;            // levels read (lv1 < 0: only lv0)
    float frac;              // weight of lv1 (1 - frac for lv0)
};

GLRAST_HD int level_side(int side, int k) { int v = side >> k; return v > 0 ? v : 1; }

// The LOD Jacobian: derivatives of the level-0 texel coordinates by screen X, Y.
GLRAST_HD void lod_jacobian(const TextureParams& p, i64 i, Lookup& L) {
    if (p.boundary != BOUNDARY_CUBE) {
        const float* da = p.uv_da + 4 * i;
        L.J[0] = da[0] * p.width;
        L.J[1] = da[1] * p.width;
        L.J[2] = da[2] * p.height;
        L.J[3] = da[3] * p.height;
        return;
    }
    // d(sc/ma) = (d sc - (sc/ma) d ma) / ma, and texel x = (sc/ma + 1) n / 2 - 1/2. Divided by ma
    // before the scaling by n / 2, so that a direction of denormal length gives a huge Jacobian (the
    // coarsest level) rather than infinity times zero.
    const float* da = p.uv_da + 6 * i;
    const FaceAxes& a = L.ax;
    float k = 0.5f * p.height;
    for (int xy = 0; xy < 2; ++xy) {
        float dsc = a.ss * da[2 * a.s + xy], dtc = a.st * da[2 * a.t + xy], dma = a.sm * da[2 * a.m + xy];
        L.J[xy] = k * ((dsc - L.us * dma) / L.ma);
        L.J[2 + xy] = k * ((dtc - L.ut * dma) / L.ma);
    }
}

// The larger eigenvalue of J^T J for J scaled by 1 / m, m = max |J| (so the
// squares neither overflow nor underflow): lambda = lambda_n m^2, lambda_n >= 1.
GLRAST_HD float normalized_eigenvalue(const float J[4], float m, float Jn[4]) {
    for (int j = 0; j < 4; ++j) Jn[j] = J[j] / m;
    float A = Jn[0] * Jn[0] + Jn[2] * Jn[2], C = Jn[1] * Jn[1] + Jn[3] * Jn[3], B = Jn[0] * Jn[1] + Jn[2] * Jn[3];
    float h = 0.5f * (A - C);
    return 0.5f * (A + C) + sqrtf(h * h + B * B);
}

GLRAST_HD float abs_max(const float J[4]) { return fmaxf(fmaxf(fabsf(J[0]), fabsf(J[1])), fmaxf(fabsf(J[2]), fabsf(J[3]))); }

GLRAST_HD Lookup lookup(const TextureParams& p, i64 i) {
    Lookup L;
    L.valid = false;
    L.interior = false;
    L.lv0 = 0;
    L.lv1 = -1;
    L.frac = 0.f;
    L.face = 0;
    if (p.boundary == BOUNDARY_CUBE) {
        const float* d = p.uv + 3 * i;
        if (!is_finite_f32(d[0]) || !is_finite_f32(d[1]) || !is_finite_f32(d[2])) return L;
        if (d[0] == 0.f && d[1] == 0.f && d[2] == 0.f) return L;
        L.face = cube_face(d);
        L.ax = face_axes(L.face);
        L.ma = L.ax.sm * d[L.ax.m];
        L.us = L.ax.ss * d[L.ax.s] / L.ma;
        L.ut = L.ax.st * d[L.ax.t] / L.ma;
        L.s = 0.5f * (L.us + 1.f);
        L.t = 0.5f * (L.ut + 1.f);
    } else {
        L.s = p.uv[2 * i];
        L.t = p.uv[2 * i + 1];
        if (!is_finite_f32(L.s) || !is_finite_f32(L.t)) return L;
    }
    L.valid = true;
    if (p.filter < FILTER_MIP_NEAREST) return L;

    float level = p.bias ? p.bias[i] : 0.f;
    if (p.uv_da) {
        lod_jacobian(p, i, L);
        float m = abs_max(L.J), Jn[4];
        // 0.5 log2(lambda); a zero footprint has level -infinity, i.e. level 0 and no level gradient,
        // and one beyond float's range (uv_da near the float limit, whose J overflows) a level above
        // every last level.
        if (!(m > 0.f)) level = -1.f;
        else if (!is_finite_f32(m)) level = GLRAST_FLT_MAX;
        else level += 0.5f * log2f(normalized_eigenvalue(L.J, m, Jn)) + log2f(m);
    }
    int last = p.last_level;
    L.interior = level > 0.f && level < (float)last;
    if (!(level > 0.f)) level = 0.f;  // also maps NaN to level 0
    if (level > (float)last) level = (float)last;
    L.lv0 = floor_int(level);
    if (L.lv0 > last) L.lv0 = last;
    if (p.filter == FILTER_MIP_LINEAR && L.lv0 < last) {
        L.lv1 = L.lv0 + 1;
        L.frac = level - (float)L.lv0;
    }
    return L;
}

// ---------------------------------------------------------------------------
// The texels one level contributes: four bilinear taps (or one for 'nearest').

struct Taps {
    i64 addr[4];   // float offsets within the level image; -1: a zero tap (or the cube corner tap)
    float w[4];    // bilinear weights, taps ordered (x0, y0), (x1, y0), (x0, y1), (x1, y1)
    float fx, fy;  // fractional texel position
    int missing;   // cube corner: the tap that is the mean of the other three, else -1
    int lw, lh;    // level size
};

// Index v of a side of n texels under the boundary mode; v is at most one side
// length outside [0, n) (texel_coord keeps it there), so wrapping needs no division.
GLRAST_HD int boundary_index(int v, int n, int boundary) {
    if (boundary == BOUNDARY_WRAP) return v < 0 ? v + n : (v >= n ? v - n : v);
    if (boundary == BOUNDARY_CLAMP) return clamp_int(v, 0, n - 1);
    return (v < 0 || v >= n) ? -1 : v;  // BOUNDARY_ZERO
}

// Texel coordinate (before boundary handling) of s on a side of n texels, bounded
// so that huge coordinates never overflow an int: wrap keeps only the fraction
// of s; clamp and zero stop two texels outside, where nothing changes anymore.
GLRAST_HD float texel_coord(float s, int n, int boundary, float shift) {
    if (boundary == BOUNDARY_WRAP) return (s - floorf(s)) * n - shift;
    return fminf(fmaxf(s * n - shift, -2.f), (float)n + 1.f);
}

GLRAST_HD Taps taps(const TextureParams& p, const Lookup& L, int k) {
    Taps q;
    q.lw = level_side(p.width, k);
    q.lh = level_side(p.height, k);
    q.missing = -1;
    int C = p.channels;
    bool cube = p.boundary == BOUNDARY_CUBE;
    if (p.filter == FILTER_NEAREST) {
        q.fx = q.fy = 0.f;
        q.w[0] = 1.f;
        for (int j = 1; j < 4; ++j) { q.w[j] = 0.f; q.addr[j] = -1; }
        if (cube) {
            int ix = clamp_int(floor_int(L.s * q.lw), 0, q.lw - 1);
            int iy = clamp_int(floor_int(L.t * q.lh), 0, q.lh - 1);
            q.addr[0] = cube_texel(L.face, ix, iy, q.lw, C);
        } else {
            int ix = boundary_index(floor_int(texel_coord(L.s, q.lw, p.boundary, 0.f)), q.lw, p.boundary);
            int iy = boundary_index(floor_int(texel_coord(L.t, q.lh, p.boundary, 0.f)), q.lh, p.boundary);
            q.addr[0] = (ix < 0 || iy < 0) ? -1 : ((i64)iy * q.lw + ix) * C;
        }
        return q;
    }
    float x, y;
    if (cube) {
        x = L.s * q.lw - 0.5f;
        y = L.t * q.lh - 0.5f;
    } else {
        x = texel_coord(L.s, q.lw, p.boundary, 0.5f);
        y = texel_coord(L.t, q.lh, p.boundary, 0.5f);
    }
    int ix0 = floor_int(x), iy0 = floor_int(y);
    q.fx = x - (float)ix0;
    q.fy = y - (float)iy0;
    q.w[0] = (1.f - q.fx) * (1.f - q.fy);
    q.w[1] = q.fx * (1.f - q.fy);
    q.w[2] = (1.f - q.fx) * q.fy;
    q.w[3] = q.fx * q.fy;
    for (int j = 0; j < 4; ++j) {
        int ix = ix0 + (j & 1), iy = iy0 + (j >> 1);
        if (cube) {
            bool off_x = ix < 0 || ix >= q.lw, off_y = iy < 0 || iy >= q.lh;
            if (off_x && off_y) {
                q.missing = j;
                q.addr[j] = -1;
            } else {
                q.addr[j] = cube_texel(L.face, ix, iy, q.lw, C);
            }
        } else {
            int bx = boundary_index(ix, q.lw, p.boundary), by = boundary_index(iy, q.lh, p.boundary);
            q.addr[j] = (bx < 0 || by < 0) ? -1 : ((i64)by * q.lw + bx) * C;
        }
    }
    return q;
}

// Offset of pixel i's texture image within level k (0 when one texture serves all images).
GLRAST_HD i64 image_offset(const TextureParams& p, int k, i64 i) {
    if (p.tex_batch == 1) return 0;
    i64 faces = p.boundary == BOUNDARY_CUBE ? 6 : 1;
    i64 size = faces * level_side(p.height, k) * level_side(p.width, k) * p.channels;
    return index_div(i, p.pixels_per_image) * size;
}

GLRAST_HD i64 level_start(const TextureParams& p, int k) { return k == 0 ? 0 : p.level_offset[k]; }

// The four tap values of channel c (the cube corner tap filled in as the mean of the others).
GLRAST_HD void fetch(const Taps& q, const float* img, int c, float v[4]) {
    float sum = 0.f;
    for (int j = 0; j < 4; ++j) {
        v[j] = q.addr[j] >= 0 ? img[q.addr[j] + c] : 0.f;
        sum += v[j];
    }
    if (q.missing >= 0) v[q.missing] = sum * (1.f / 3.f);
}

// Threads walk each image in bands of 8 rows, column by column within a band,
// so that neighbouring threads look up neighbouring pixels: coherent texture
// coordinates then share cache lines instead of sweeping whole texture rows.
GLRAST_HD i64 band_pixel(const TextureParams& p, i64 t) {
    if (p.pixels_per_image > 0x7fffffff) return t;  // the int arithmetic below would overflow: row order
    i64 image = index_div(t, p.pixels_per_image);
    int r = (int)(t - image * p.pixels_per_image);
    int W = p.image_width, band_pixels = 8 * W;
    int band = r / band_pixels, within = r - band * band_pixels;
    int rows = (int)(p.pixels_per_image / W) - 8 * band;
    if (rows > 8) rows = 8;
    int col = within / rows;
    return image * p.pixels_per_image + (i64)(8 * band + within - col * rows) * W + col;
}

GLRAST_KERNEL(texture_fwd, TextureParams) {
    i = band_pixel(p, i);
    int C = p.channels;
    float* out = p.out + i * C;
    Lookup L = lookup(p, i);
    if (!L.valid) {
        for (int c = 0; c < C; ++c) out[c] = 0.f;
        return;
    }
    // One level, or two blended by frac (a zero weight needs no fetch).
    int passes = L.lv1 >= 0 && L.frac > 0.f ? 2 : 1;
    float wl[2] = {1.f - L.frac, L.frac};
    Taps q[2];
    const float* img[2];
    for (int pass = 0; pass < passes; ++pass) {
        int k = pass == 0 ? L.lv0 : L.lv1;
        q[pass] = taps(p, L, k);
        img[pass] = (k == 0 ? p.tex : p.pyr + level_start(p, k)) + image_offset(p, k, i);
    }
    for (int c = 0; c < C; ++c) {
        float acc = 0.f;
        for (int pass = 0; pass < passes; ++pass) {
            float v[4];
            fetch(q[pass], img[pass], c, v);
            const float* w = q[pass].w;
            acc += wl[pass] * (w[0] * v[0] + w[1] * v[1] + w[2] * v[2] + w[3] * v[3]);
        }
        if (!is_finite_f32(acc)) {
            // Texels near the float limit can overflow the float sum (or make it inf - inf) though the
            // weighted mean lies within float's range: once more in double.
            double exact = 0.0;
            for (int pass = 0; pass < passes; ++pass) {
                float v[4];
                fetch(q[pass], img[pass], c, v);
                for (int j = 0; j < 4; ++j) exact += (double)wl[pass] * q[pass].w[j] * v[j];
            }
            acc = narrow_f32(exact);
        }
        out[c] = acc;
    }
}

// Backward of level = 0.5 log2(lambda) (+ bias) to the Jacobian J, computed on
// J / m (m = max |J|) so that nothing overflows: d level / dJ = (d level / dJn) / m
// (in double: 1 / m of a tiny footprint exceeds float's range).
GLRAST_HD void lod_jacobian_grad(const Lookup& L, double g_level, double gJ[4]) {
    float m = abs_max(L.J), J[4];
    float lambda = normalized_eigenvalue(L.J, m, J);
    float A = J[0] * J[0] + J[2] * J[2], C = J[1] * J[1] + J[3] * J[3], B = J[0] * J[1] + J[2] * J[3];
    float h = 0.5f * (A - C), r = sqrtf(h * h + B * B);
    double g_lambda = g_level * 0.5 / (lambda * 0.69314718056);
    // lambda = (A + C) / 2 + r; where r = 0 (isotropic footprint) its kink gets the mean slope.
    double gA = 0.5 * g_lambda, gC = 0.5 * g_lambda, gB = 0.0;
    if (r > 0.f) {
        gA += 0.5 * g_lambda * h / r;
        gC -= 0.5 * g_lambda * h / r;
        gB = g_lambda * B / r;
    }
    gJ[0] = (2.0 * gA * J[0] + gB * J[1]) / m;
    gJ[1] = (2.0 * gC * J[1] + gB * J[0]) / m;
    gJ[2] = (2.0 * gA * J[2] + gB * J[3]) / m;
    gJ[3] = (2.0 * gC * J[3] + gB * J[2]) / m;
}

GLRAST_SCATTER_KERNEL(texture_bwd, TextureParams) {
    i = band_pixel(p, i);
    int C = p.channels;
    bool cube = p.boundary == BOUNDARY_CUBE;
    int uv_dims = cube ? 3 : 2, da_dims = cube ? 6 : 4;
    float* g_uv = p.grad_uv ? p.grad_uv + i * uv_dims : nullptr;
    float* g_da = p.grad_uv_da ? p.grad_uv_da + i * da_dims : nullptr;
    if (g_uv) for (int j = 0; j < uv_dims; ++j) g_uv[j] = 0.f;
    if (g_da) for (int j = 0; j < da_dims; ++j) g_da[j] = 0.f;
    if (p.grad_bias) p.grad_bias[i] = 0.f;
    Lookup L = lookup(p, i);
    if (!L.valid) return;

    // The uv, uv_da and bias gradients in double, saturated at the end: differences of texels near
    // the float limit, and 1 / ma of a cube direction of denormal length, exceed float's range.
    const float* go = p.grad_out + i * C;
    double g_s = 0.0, g_t = 0.0, g_level = 0.0;
    bool want_level = p.filter == FILTER_MIP_LINEAR && L.interior;
    for (int pass = 0; pass < 2; ++pass) {
        int k = pass == 0 ? L.lv0 : L.lv1;
        float wl = pass == 0 ? 1.f - L.frac : L.frac;
        // A level with weight 0 still matters when the level itself gets a gradient.
        if (k < 0 || (wl == 0.f && !want_level)) continue;
        Taps q = taps(p, L, k);
        i64 start = level_start(p, k) + image_offset(p, k, i);
        const float* img = (k == 0 ? p.tex : p.pyr) + start;
        const Accumulator& gimg = k == 0 ? p.grad_tex : p.grad_pyr;
        // Weights onto real texels: a cube corner tap spreads its weight over the other three.
        float weff[4];
        for (int j = 0; j < 4; ++j) weff[j] = wl * q.w[j];
        if (q.missing >= 0) {
            float share = weff[q.missing] * (1.f / 3.f);
            for (int j = 0; j < 4; ++j) weff[j] = j == q.missing ? 0.f : weff[j] + share;
        }
        double gfx = 0.0, gfy = 0.0, gsample = 0.0;
        for (int c = 0; c < C; ++c) {
            float g = go[c];
            if (g == 0.f) continue;
            float v[4];
            fetch(q, img, c, v);
            double d10 = (double)v[1] - v[0], d32 = (double)v[3] - v[2];
            double d20 = (double)v[2] - v[0], d31 = (double)v[3] - v[1];
            gsample += g * ((double)q.w[0] * v[0] + (double)q.w[1] * v[1] + (double)q.w[2] * v[2] + (double)q.w[3] * v[3]);
            gfx += g * ((1.0 - q.fy) * d10 + q.fy * d32);
            gfy += g * ((1.0 - q.fx) * d20 + q.fx * d31);
            if (gimg.data)
                for (int j = 0; j < 4; ++j)
                    if (q.addr[j] >= 0 && weff[j] != 0.f) accumulate(gimg, start + q.addr[j] + c, g * weff[j]);
        }
        if (p.filter != FILTER_NEAREST) {
            g_s += wl * gfx * q.lw;
            g_t += wl * gfy * q.lh;
        }
        g_level += pass == 0 ? -gsample : gsample;
    }
    if (!want_level) g_level = 0.0;
    if (p.grad_bias) p.grad_bias[i] = saturate_f32(g_level);

    double gJ[4] = {0.0, 0.0, 0.0, 0.0};
    if (p.uv_da && g_level != 0.0) lod_jacobian_grad(L, g_level, gJ);
    if (!cube) {
        if (g_uv) { g_uv[0] = saturate_f32(g_s); g_uv[1] = saturate_f32(g_t); }
        if (g_da) {
            g_da[0] = saturate_f32(gJ[0] * p.width);
            g_da[1] = saturate_f32(gJ[1] * p.width);
            g_da[2] = saturate_f32(gJ[2] * p.height);
            g_da[3] = saturate_f32(gJ[3] * p.height);
        }
        return;
    }
    // Cube: s = (us + 1) / 2 with us = sc / ma; J as in lod_jacobian.
    const FaceAxes& a = L.ax;
    double ma = L.ma, us = L.us, ut = L.ut;
    double g_us = 0.5 * g_s, g_ut = 0.5 * g_t, g_ma = 0.0;
    if (gJ[0] != 0.0 || gJ[1] != 0.0 || gJ[2] != 0.0 || gJ[3] != 0.0) {
        const float* da = p.uv_da + 6 * i;
        double k = 0.5 * p.height / ma;
        for (int xy = 0; xy < 2; ++xy) {
            double dma = a.sm * da[2 * a.m + xy];
            double gs = gJ[xy], gt = gJ[2 + xy];
            g_us -= k * dma * gs;
            g_ut -= k * dma * gt;
            g_ma -= (L.J[xy] * gs + L.J[2 + xy] * gt) / ma;
            if (g_da) {
                g_da[2 * a.s + xy] = saturate_f32(a.ss * k * gs);
                g_da[2 * a.t + xy] = saturate_f32(a.st * k * gt);
                g_da[2 * a.m + xy] = saturate_f32(-a.sm * k * (us * gs + ut * gt));
            }
        }
    }
    if (g_uv) {
        g_ma -= (g_us * us + g_ut * ut) / ma;
        g_uv[a.s] = saturate_f32(a.ss * g_us / ma);
        g_uv[a.t] = saturate_f32(a.st * g_ut / ma);
        g_uv[a.m] = saturate_f32(a.sm * g_ma);
    }
}

// ---------------------------------------------------------------------------
// Mip pyramid: one level from the next finer one (each texel the mean of the
// 2x2, 2x1 or 1x2 block below it), and the gradient's way back down.

struct MipParams {
    float* fine;             // [B, fh, fw, C] (B = images x faces)
    float* coarse;           // [B, ch, cw, C], ch = max(1, fh / 2), cw = max(1, fw / 2)
    int fh, fw, ch, cw;
    int channels;
};
GLRAST_LAYOUT(MipParams, fine, coarse, fh, fw, ch, cw, channels)

// Thread i handles coarse texel i and the (up to) 2x2 block of fine texels below
// it; blocks do not overlap, so the gradient kernel needs no atomics.
struct MipBlock {
    i64 coarse, fine;        // float offsets of the coarse texel and of its block's first fine texel
    int bw, bh;              // block size
};

GLRAST_HD MipBlock mip_block(const MipParams& p, i64 i) {
    i64 r = index_div(i, p.cw), b = index_div(r, p.ch);
    int x = (int)(i - r * p.cw), y = (int)(r - b * p.ch);
    MipBlock m;
    m.bw = p.fw > 1 ? 2 : 1;
    m.bh = p.fh > 1 ? 2 : 1;
    m.coarse = i * p.channels;
    m.fine = ((b * p.fh + (i64)m.bh * y) * p.fw + (i64)m.bw * x) * p.channels;
    return m;
}

GLRAST_KERNEL(mip_down, MipParams) {
    MipBlock m = mip_block(p, i);
    float scale = 1.f / (float)(m.bw * m.bh);
    for (int c = 0; c < p.channels; ++c) {
        double sum = 0.0;  // texels near the float limit would overflow a float sum
        for (int dy = 0; dy < m.bh; ++dy)
            for (int dx = 0; dx < m.bw; ++dx) sum += p.fine[m.fine + ((i64)dy * p.fw + dx) * p.channels + c];
        p.coarse[m.coarse + c] = narrow_f32(sum * scale);
    }
}

GLRAST_KERNEL(mip_down_grad, MipParams) {  // fine += coarse / block size, over each block
    MipBlock m = mip_block(p, i);
    float scale = 1.f / (float)(m.bw * m.bh);
    for (int c = 0; c < p.channels; ++c) {
        float g = p.coarse[m.coarse + c] * scale;
        for (int dy = 0; dy < m.bh; ++dy)
            for (int dx = 0; dx < m.bw; ++dx) p.fine[m.fine + ((i64)dy * p.fw + dx) * p.channels + c] += g;
    }
}
