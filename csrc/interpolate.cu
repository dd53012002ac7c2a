// interpolate: per-pixel attribute interpolation with the rasterizer's
// barycentrics, out = u a0 + v a1 + (1 - u - v) a2, and optionally the
// screen-space derivatives dA/dX = (a0 - a2) du/dX + (a1 - a2) dv/dX (same in Y).
#include "common.h"

struct InterpolateParams {
    const float* attr;       // [N or 1, V, A] (stride attr_image_stride between images)
    const float* rast;       // [N, H, W, 4]
    const float* rast_db;    // [N, H, W, 4] or null
    const int* tri;          // [T, 3]
    const int* diff_idx;     // [D] attribute indices whose derivatives are produced
    float* out;              // [N, H, W, A]
    float* out_da;           // [N, H, W, 2D] or null
    const float* grad_out;   // backward: [N, H, W, A]
    const float* grad_da;    // backward: [N, H, W, 2D] or null
    Accumulator grad_attr;   // backward: slots shaped like attr
    float* grad_rast;        // backward: [N, H, W, 4]
    float* grad_rast_db;     // backward: [N, H, W, 4] or null
    i64 pixels_per_image;    // H * W
    i64 pixels;              // N * H * W
    i64 attr_image_stride;   // V * A in instanced mode with N > 1, else 0
    int num_attrs;           // A
    int num_diff;            // D
    int num_tris;            // T: ids outside [0, T) are treated as empty
};
GLRAST_LAYOUT(InterpolateParams, attr, rast, rast_db, tri, diff_idx, out, out_da, grad_out, grad_da, grad_attr,
              grad_rast, grad_rast_db, pixels_per_image, pixels, attr_image_stride, num_attrs, num_diff, num_tris)

struct Corners {
    int t;                   // triangle id, -1 for an empty pixel
    i64 row[3];              // offsets of the three vertices' attribute rows in attr
};

GLRAST_HD Corners corners(const InterpolateParams& p, i64 i) {
    prefetch_rast_tri_row(p.tri, p.num_tris, p.rast, i, p.pixels);
    Corners c;
    c.t = decode_triangle_id(p.rast[4 * i + 3]);
    if (c.t >= p.num_tris) c.t = -1;  // a rast from another mesh must not index past tri
    if (c.t < 0) return c;
    i64 base = index_div(i, p.pixels_per_image) * p.attr_image_stride;
    for (int k = 0; k < 3; ++k) c.row[k] = base + (i64)p.tri[3 * (i64)c.t + k] * p.num_attrs;
    return c;
}

GLRAST_KERNEL(interpolate_fwd, InterpolateParams) {
    float* out = p.out + i * p.num_attrs;
    float* out_da = p.out_da ? p.out_da + i * 2 * p.num_diff : nullptr;
    Corners c = corners(p, i);
    if (c.t < 0) {
        for (int k = 0; k < p.num_attrs; ++k) out[k] = 0.f;
        if (out_da) for (int k = 0; k < 2 * p.num_diff; ++k) out_da[k] = 0.f;
        return;
    }
    const float* a[3] = {p.attr + c.row[0], p.attr + c.row[1], p.attr + c.row[2]};
    float u = p.rast[4 * i], v = p.rast[4 * i + 1], s = 1.f - u - v;
    for (int k = 0; k < p.num_attrs; ++k) {
        float value = u * a[0][k] + v * a[1][k] + s * a[2][k];
        // attributes near the float limit can overflow the float sum though the blend lies within range
        if (!is_finite_f32(value)) value = narrow_f32((double)u * a[0][k] + (double)v * a[1][k] + (double)s * a[2][k]);
        out[k] = value;
    }
    if (!out_da) return;
    const float* db = p.rast_db + 4 * i;
    for (int d = 0; d < p.num_diff; ++d) {
        int k = p.diff_idx[d];
        double e0 = (double)a[0][k] - a[2][k], e1 = (double)a[1][k] - a[2][k];  // differences may exceed float
        out_da[2 * d] = saturate_f32(e0 * db[0] + e1 * db[2]);
        out_da[2 * d + 1] = saturate_f32(e0 * db[1] + e1 * db[3]);
    }
}

// Any of grad_attr (its data), grad_rast and grad_rast_db may be null: a gradient nobody wants.
GLRAST_SCATTER_KERNEL(interpolate_bwd, InterpolateParams) {
    float* grad_rast = p.grad_rast ? p.grad_rast + 4 * i : nullptr;
    float* grad_db = p.grad_rast_db ? p.grad_rast_db + 4 * i : nullptr;
    const bool want_attr = p.grad_attr.data != nullptr;
    if (grad_rast) for (int k = 0; k < 4; ++k) grad_rast[k] = 0.f;
    if (grad_db) for (int k = 0; k < 4; ++k) grad_db[k] = 0.f;
    Corners c = corners(p, i);
    if (c.t < 0) return;
    const float* a[3] = {p.attr + c.row[0], p.attr + c.row[1], p.attr + c.row[2]};
    float u = p.rast[4 * i], v = p.rast[4 * i + 1], s = 1.f - u - v;
    const float* go = p.grad_out + i * p.num_attrs;
    double gu = 0.0, gv = 0.0;  // in double, saturated: attribute differences may exceed float's range
    for (int k = 0; k < p.num_attrs; ++k) {
        float gk = go[k];
        if (gk == 0.f) continue;
        if (want_attr) {
            accumulate(p.grad_attr, c.row[0] + k, saturate_f32((double)u * gk));
            accumulate(p.grad_attr, c.row[1] + k, saturate_f32((double)v * gk));
            accumulate(p.grad_attr, c.row[2] + k, saturate_f32((double)s * gk));
        }
        gu += gk * ((double)a[0][k] - a[2][k]);
        gv += gk * ((double)a[1][k] - a[2][k]);
    }
    if (grad_rast) {
        grad_rast[0] = saturate_f32(gu);
        grad_rast[1] = saturate_f32(gv);
    }
    if (!p.grad_da || (!want_attr && !grad_db)) return;
    const float* db = p.rast_db + 4 * i;
    const float* gda = p.grad_da + i * 2 * p.num_diff;
    double gdb[4] = {0.0, 0.0, 0.0, 0.0};
    for (int d = 0; d < p.num_diff; ++d) {
        int k = p.diff_idx[d];
        float gx = gda[2 * d], gy = gda[2 * d + 1];
        if (gx == 0.f && gy == 0.f) continue;
        double e0 = (double)a[0][k] - a[2][k], e1 = (double)a[1][k] - a[2][k];
        gdb[0] += gx * e0; gdb[1] += gy * e0; gdb[2] += gx * e1; gdb[3] += gy * e1;
        double g0 = (double)gx * db[0] + (double)gy * db[1], g1 = (double)gx * db[2] + (double)gy * db[3];
        if (!want_attr) continue;
        accumulate(p.grad_attr, c.row[0] + k, saturate_f32(g0));
        accumulate(p.grad_attr, c.row[1] + k, saturate_f32(g1));
        accumulate(p.grad_attr, c.row[2] + k, saturate_f32(-g0 - g1));
    }
    if (grad_db) for (int k = 0; k < 4; ++k) grad_db[k] = saturate_f32(gdb[k]);
}
