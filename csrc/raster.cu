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
    int verts_per_image;     // V in instanced mode, 0 in range mode
    int num_tris;            // T: ids outside [1, T] are treated as empty
};
GLRAST_LAYOUT(RasterParams, pos, tri, ids, rast, rast_db, grad_rast, grad_db, grad_pos, height, width,
              verts_per_image, num_tris)

// The GL pass's input (see raster_corners).
struct CornerParams {
    const float* pos;        // [N, V, 4] (instanced) or [V, 4] (range mode)
    const int* tri;          // the flat [3T] corner indices, from the chunk's first corner on
    float* corners;          // output: [chunk, 4]
    int image;               // which position set of pos (instanced mode)
    int verts_per_image;     // V in instanced mode, 0 in range mode
};
GLRAST_LAYOUT(CornerParams, pos, tri, corners, image, verts_per_image)

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
    i64 hw = (i64)p.height * p.width;
    i64 image = i / hw, pix = i - image * hw;
    int row = (int)(pix / p.width), col = (int)(pix - (i64)row * p.width);
    s.xn = (col + 0.5) * (2.0 / p.width) - 1.0;
    s.yn = (row + 0.5) * (2.0 / p.height) - 1.0;
    i64 vbase = image * p.verts_per_image;
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

// Before the GL pass: the clip-space corners of every triangle, in order
// (corners[3t + k] = pos of vertex tri[t][k] of position set `image`). The GL
// pass draws them as a plain triangle list: llvmpipe runs that faster than an
// indexed draw, whose vertex cache only adds work when every vertex shader
// invocation is a single attribute copy.
//
// A corner of huge or tiny magnitude is divided by a power of two (see rescale_exponent): a
// homogeneous point scaled by a positive factor is the same point, and so are the segments between
// corners that GL's clipping cuts, but GL's clip arithmetic (x + w, ...) overflows near the float
// limit and may flush denormals to zero.
GLRAST_KERNEL(raster_corners, CornerParams) {
    i64 v = (i64)p.image * p.verts_per_image + p.tri[i];
    const float* src = p.pos + 4 * v;
    float* dst = p.corners + 4 * i;
    float m = fmaxf(fmaxf(fabsf(src[0]), fabsf(src[1])), fmaxf(fabsf(src[2]), fabsf(src[3])));
    int e = rescale_exponent(m);
    for (int k = 0; k < 4; ++k) dst[k] = e == 0 ? src[k] : ldexpf(src[k], -e);
}

GLRAST_KERNEL(raster_fwd, RasterParams) {
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
