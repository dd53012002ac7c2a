#version 430
// Writes rast = (u, v, z/w, id+1) and rast_db = (du/dX, du/dY, dv/dX, dv/dY).
//
// The fixed-function rasterizer decides coverage and depth; barycentrics are
// recomputed here in closed form from the pixel centre and the triangle's
// clip-space vertices. With (xn, yn) the pixel centre in NDC, the clip-space
// (perspective-correct) barycentrics are proportional to
//     L_k = c_k + a_k xn + b_k yn,
//     c_k = x_j y_l - x_l y_j,  a_k = y_j w_l - y_l w_j,  b_k = x_l w_j - x_j w_l
// for (k, j, l) in {(0,1,2), (1,2,0), (2,0,1)}; u = L_0 / S, v = L_1 / S with
// S = L_0 + L_1 + L_2. csrc/raster.cu differentiates exactly this formula.
layout(std430, binding = 0) readonly buffer Positions { vec4 pos[]; };
layout(std430, binding = 1) readonly buffer Triangles { int tri[]; };
uniform int vertex_base;
uniform int tri_base;     // index of the first triangle of this draw
uniform vec2 ndc_scale;   // (2 / W, 2 / H)
uniform bool peel;        // depth peeling: keep only what lies behind prev_rast
uniform sampler2D prev_rast;

layout(location = 0) out vec4 out_rast;
layout(location = 1) out vec4 out_db;

void main() {
    int t = tri_base + gl_PrimitiveID;
    vec4 p0 = pos[vertex_base + tri[3 * t + 0]];
    vec4 p1 = pos[vertex_base + tri[3 * t + 1]];
    vec4 p2 = pos[vertex_base + tri[3 * t + 2]];
    float xn = gl_FragCoord.x * ndc_scale.x - 1.0;
    float yn = gl_FragCoord.y * ndc_scale.y - 1.0;

    vec3 c = vec3(p1.x * p2.y - p2.x * p1.y, p2.x * p0.y - p0.x * p2.y, p0.x * p1.y - p1.x * p0.y);
    vec3 a = vec3(p1.y * p2.w - p2.y * p1.w, p2.y * p0.w - p0.y * p2.w, p0.y * p1.w - p1.y * p0.w);
    vec3 b = vec3(p2.x * p1.w - p1.x * p2.w, p0.x * p2.w - p2.x * p0.w, p1.x * p0.w - p0.x * p1.w);
    vec3 L = c + a * xn + b * yn;
    float S = L.x + L.y + L.z;
    if (!(abs(S) > 0.0) || isinf(S)) discard;  // degenerate or non-finite triangle
    float inv = 1.0 / S;
    float u = L.x * inv;
    float v = L.y * inv;
    float zw = dot(L, vec3(p0.z, p1.z, p2.z)) / dot(L, vec3(p0.w, p1.w, p2.w));

    float Sa = a.x + a.y + a.z;
    float Sb = b.x + b.y + b.z;
    float du_dxn = (a.x - u * Sa) * inv;
    float du_dyn = (b.x - u * Sb) * inv;
    float dv_dxn = (a.y - v * Sa) * inv;
    float dv_dyn = (b.y - v * Sb) * inv;

    if (peel) {
        vec4 prev = texelFetch(prev_rast, ivec2(gl_FragCoord.xy), 0);
        if (prev.w == 0.0 || zw <= prev.z) discard;
    }

    uint id1 = uint(t) + 1u;
    float id_enc = id1 <= 16777216u ? float(id1) : uintBitsToFloat(0x4A800000u + id1);
    out_rast = vec4(u, v, zw, id_enc);
    out_db = vec4(du_dxn * ndc_scale.x, du_dyn * ndc_scale.y, dv_dxn * ndc_scale.x, dv_dyn * ndc_scale.y);
}
