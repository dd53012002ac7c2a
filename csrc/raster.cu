// Backward of rasterize: d(loss)/d(u, v, du/dX, du/dY, dv/dX, dv/dY) -> d(loss)/d(pos).
//
// Per covered pixel, the barycentrics are recomputed in closed form from the
// pixel centre (xn, yn in NDC) and the clip-space vertices p_k = (x, y, z, w):
//     L_k = c_k + a_k xn + b_k yn,   (k, j, l) in {(0,1,2), (1,2,0), (2,0,1)}
//     c_k = x_j y_l - x_l y_j,  a_k = y_j w_l - y_l w_j,  b_k = x_l w_j - x_j w_l
//     S = sum L_k,  u = L_0 / S,  v = L_1 / S,
//     du/dxn = (a_0 - u Sa) / S,  du/dyn = (b_0 - u Sb) / S   (Sa = sum a_k, Sb = sum b_k)
// and du/dX = du/dxn * 2/W, du/dY = du/dyn * 2/H (likewise for v); this is the
// formula shaders/rasterize.frag evaluates. The chain rule below runs it
// backwards and scatters onto x, y, w of the three vertices with atomics.
#include "common.h"

struct RasterGradParams {
    const float* pos;        // [N, V, 4] (instanced) or [V, 4] (range mode)
    const int* tri;          // [T, 3]
    const float* rast;       // [N, H, W, 4]
    const float* grad_rast;  // [N, H, W, 4]; channels 0, 1 used
    const float* grad_db;    // [N, H, W, 4] or null
    float* grad_pos;         // like pos, zero-initialised
    int height, width;
    int verts_per_image;     // V in instanced mode, 0 in range mode
};

GLRAST_KERNEL(raster_grad, RasterGradParams) {
    const float* r = p.rast + 4 * i;
    int t = decode_triangle_id(r[3]);
    if (t < 0) return;
    const float* gr = p.grad_rast + 4 * i;
    float gu = gr[0], gv = gr[1];
    float gux = 0.f, guy = 0.f, gvx = 0.f, gvy = 0.f;
    float sx = 2.f / p.width, sy = 2.f / p.height;
    if (p.grad_db) {
        const float* gd = p.grad_db + 4 * i;
        gux = gd[0] * sx; guy = gd[1] * sy; gvx = gd[2] * sx; gvy = gd[3] * sy;  // w.r.t. xn, yn
    }
    if (gu == 0.f && gv == 0.f && gux == 0.f && guy == 0.f && gvx == 0.f && gvy == 0.f) return;

    i64 hw = (i64)p.height * p.width;
    i64 image = i / hw, pix = i - image * hw;
    int row = (int)(pix / p.width), col = (int)(pix - (i64)row * p.width);
    float xn = (col + 0.5f) * sx - 1.f;
    float yn = (row + 0.5f) * sy - 1.f;

    i64 vbase = (i64)image * p.verts_per_image;
    int vi[3];
    float x[3], y[3], w[3];
    for (int k = 0; k < 3; ++k) {
        vi[k] = p.tri[3 * (i64)t + k];
        const float* pk = p.pos + 4 * (vbase + vi[k]);
        x[k] = pk[0]; y[k] = pk[1]; w[k] = pk[3];
    }
    float a[3], b[3], L[3];
    for (int k = 0; k < 3; ++k) {
        int j = (k + 1) % 3, l = (k + 2) % 3;
        float c = x[j] * y[l] - x[l] * y[j];
        a[k] = y[j] * w[l] - y[l] * w[j];
        b[k] = x[l] * w[j] - x[j] * w[l];
        L[k] = c + a[k] * xn + b[k] * yn;
    }
    float S = L[0] + L[1] + L[2];
    if (!(fabsf(S) > 0.f) || !is_finite_f32(S)) return;
    float inv = 1.f / S, inv2 = inv * inv;
    float Sa = a[0] + a[1] + a[2], Sb = b[0] + b[1] + b[2];
    float u = L[0] * inv, v = L[1] * inv;

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

    float gx[3] = {0.f, 0.f, 0.f}, gy[3] = {0.f, 0.f, 0.f}, gw[3] = {0.f, 0.f, 0.f};
    for (int k = 0; k < 3; ++k) {
        int j = (k + 1) % 3, l = (k + 2) % 3;
        float gc = gLk[k];
        float ga = gAk[k] + xn * gLk[k];
        float gb = gBk[k] + yn * gLk[k];
        // c = x_j y_l - x_l y_j
        gx[j] += gc * y[l]; gy[l] += gc * x[j]; gx[l] -= gc * y[j]; gy[j] -= gc * x[l];
        // a = y_j w_l - y_l w_j
        gy[j] += ga * w[l]; gw[l] += ga * y[j]; gy[l] -= ga * w[j]; gw[j] -= ga * y[l];
        // b = x_l w_j - x_j w_l
        gx[l] += gb * w[j]; gw[j] += gb * x[l]; gx[j] -= gb * w[l]; gw[l] -= gb * x[j];
    }
    for (int k = 0; k < 3; ++k) {
        float* g = p.grad_pos + 4 * (vbase + vi[k]);
        atomic_add_f32(g + 0, gx[k]);
        atomic_add_f32(g + 1, gy[k]);
        atomic_add_f32(g + 3, gw[k]);
    }
}
