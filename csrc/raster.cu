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
    float x[3], y[3], z[3], w[3];
    float a[3], b[3], L[3];
    float xn, yn, S;
};

// Loads triangle t for pixel i and evaluates the L_k; false if S is 0 or not finite.
GLRAST_HD bool setup(const RasterParams& p, i64 i, int t, Setup& s) {
    i64 hw = (i64)p.height * p.width;
    i64 image = i / hw, pix = i - image * hw;
    int row = (int)(pix / p.width), col = (int)(pix - (i64)row * p.width);
    s.xn = (col + 0.5f) * (2.f / p.width) - 1.f;
    s.yn = (row + 0.5f) * (2.f / p.height) - 1.f;
    i64 vbase = image * p.verts_per_image;
    for (int k = 0; k < 3; ++k) {
        s.vi[k] = vbase + p.tri[3 * (i64)t + k];
        const float* pk = p.pos + 4 * s.vi[k];
        s.x[k] = pk[0]; s.y[k] = pk[1]; s.z[k] = pk[2]; s.w[k] = pk[3];
    }
    for (int k = 0; k < 3; ++k) {
        int j = (k + 1) % 3, l = (k + 2) % 3;
        float c = s.x[j] * s.y[l] - s.x[l] * s.y[j];
        s.a[k] = s.y[j] * s.w[l] - s.y[l] * s.w[j];
        s.b[k] = s.x[l] * s.w[j] - s.x[j] * s.w[l];
        s.L[k] = c + s.a[k] * s.xn + s.b[k] * s.yn;
    }
    s.S = s.L[0] + s.L[1] + s.L[2];
    return fabsf(s.S) > 0.f && is_finite_f32(s.S);
}

// Before the GL pass: the clip-space corners of every triangle, in order
// (corners[3t + k] = pos of vertex tri[t][k] of position set `image`). The GL
// pass draws them as a plain triangle list: llvmpipe runs that faster than an
// indexed draw, whose vertex cache only adds work when every vertex shader
// invocation is a single attribute copy.
GLRAST_KERNEL(raster_corners, CornerParams) {
    i64 v = (i64)p.image * p.verts_per_image + p.tri[i];
    const float* src = p.pos + 4 * v;
    float* dst = p.corners + 4 * i;
    dst[0] = src[0]; dst[1] = src[1]; dst[2] = src[2]; dst[3] = src[3];
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
    float inv = 1.f / s.S;
    float u = s.L[0] * inv, v = s.L[1] * inv;
    r[0] = u;
    r[1] = v;
    r[2] = (s.L[0] * s.z[0] + s.L[1] * s.z[1] + s.L[2] * s.z[2]) / (s.L[0] * s.w[0] + s.L[1] * s.w[1] + s.L[2] * s.w[2]);
    if (!db) return;
    float Sa = s.a[0] + s.a[1] + s.a[2], Sb = s.b[0] + s.b[1] + s.b[2];
    float sx = 2.f / p.width, sy = 2.f / p.height;
    db[0] = (s.a[0] - u * Sa) * inv * sx;
    db[1] = (s.b[0] - u * Sb) * inv * sy;
    db[2] = (s.a[1] - v * Sa) * inv * sx;
    db[3] = (s.b[1] - v * Sb) * inv * sy;
}

GLRAST_KERNEL(raster_grad, RasterParams) {
    int t = decode_triangle_id(p.rast[4 * i + 3]);
    if (t < 0 || t >= p.num_tris) return;
    const float* gr = p.grad_rast + 4 * i;
    float gu = gr[0], gv = gr[1];
    float gux = 0.f, guy = 0.f, gvx = 0.f, gvy = 0.f;
    if (p.grad_db) {
        float sx = 2.f / p.width, sy = 2.f / p.height;
        const float* gd = p.grad_db + 4 * i;
        gux = gd[0] * sx; guy = gd[1] * sy; gvx = gd[2] * sx; gvy = gd[3] * sy;  // w.r.t. xn, yn
    }
    if (gu == 0.f && gv == 0.f && gux == 0.f && guy == 0.f && gvx == 0.f && gvy == 0.f) return;
    Setup s;
    if (!setup(p, i, t, s)) return;
    const float* a = s.a;
    const float* b = s.b;
    float inv = 1.f / s.S, inv2 = inv * inv;
    float Sa = a[0] + a[1] + a[2], Sb = b[0] + b[1] + b[2];
    float u = s.L[0] * inv, v = s.L[1] * inv;

    // Gradients w.r.t. the intermediate quantities L_k, a_k, b_k.
    float gL0 = gu * inv - (gux * Sa + guy * Sb) * inv2;
    float gL1 = gv * inv - (gvx * Sa + gvy * Sb) * inv2;
    float gSa = -(gux * u + gvx * v) * inv;
    float gSb = -(guy * u + gvy * v) * inv;
    float gS = -(gu * u + gv * v) * inv
             - (gux * a[0] + guy * b[0] + gvx * a[1] + gvy * b[1]) * inv2
             + 2.f * ((gux * Sa + guy * Sb) * u + (gvx * Sa + gvy * Sb) * v) * inv2;
    float gLk[3] = {gL0 + gS, gL1 + gS, gS};
    float gAk[3] = {gux * inv + gSa, gvx * inv + gSa, gSa};
    float gBk[3] = {guy * inv + gSb, gvy * inv + gSb, gSb};

    const float* x = s.x;
    const float* y = s.y;
    const float* w = s.w;
    float gx[3] = {0.f, 0.f, 0.f}, gy[3] = {0.f, 0.f, 0.f}, gw[3] = {0.f, 0.f, 0.f};
    for (int k = 0; k < 3; ++k) {
        int j = (k + 1) % 3, l = (k + 2) % 3;
        float gc = gLk[k];
        float ga = gAk[k] + s.xn * gLk[k];
        float gb = gBk[k] + s.yn * gLk[k];
        // c = x_j y_l - x_l y_j
        gx[j] += gc * y[l]; gy[l] += gc * x[j]; gx[l] -= gc * y[j]; gy[j] -= gc * x[l];
        // a = y_j w_l - y_l w_j
        gy[j] += ga * w[l]; gw[l] += ga * y[j]; gy[l] -= ga * w[j]; gw[j] -= ga * y[l];
        // b = x_l w_j - x_j w_l
        gx[l] += gb * w[j]; gw[j] += gb * x[l]; gx[j] -= gb * w[l]; gw[l] -= gb * x[j];
    }
    for (int k = 0; k < 3; ++k) {
        accumulate(p.grad_pos, 4 * s.vi[k] + 0, gx[k]);
        accumulate(p.grad_pos, 4 * s.vi[k] + 1, gy[k]);
        accumulate(p.grad_pos, 4 * s.vi[k] + 3, gw[k]);
    }
}
