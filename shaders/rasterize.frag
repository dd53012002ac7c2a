#version 430
// Writes the id + 1 of the visible triangle (0 stays for empty pixels). The
// fixed-function rasterizer decides coverage and the depth test decides
// visibility; csrc/raster.cu computes (u, v, z/w) and their derivatives from
// the id afterwards, which keeps this stage (llvmpipe runs it per 2x2 quad of
// every tiny triangle) and the render target (4 bytes a pixel) small.
//
// With PEEL defined (depth peeling), a fragment survives only where the
// previous layer has a surface and the fragment's z/w is strictly larger than
// that surface's. Both depths are evaluated here, by the same `precise` code
// (the closed form of csrc/raster.cu), so that a surface never compares as
// farther than itself or than an identical copy of itself: comparing against
// the kernel's z/w instead would let rounding bring such surfaces back layer
// after layer, without end.
uniform int tri_base;     // index of the first triangle of this draw
layout(location = 0) out uint out_id;

#ifdef PEEL
layout(std430, binding = 0) readonly buffer Positions { vec4 pos[]; };
layout(std430, binding = 1) readonly buffer Triangles { int tri[]; };
uniform int vertex_base;
uniform vec2 ndc_scale;   // (2 / W, 2 / H)
uniform sampler2D prev_id; // rast[..., 3] of the previous layer

// The triangle id held by rast[..., 3], -1 for an empty pixel (ID_EXACT_MAX and
// ID_BITS_BASE are defined by glrast/pipeline.py from glrast/ids.py).
int decode_id(float w) {
    if (!(w > 0.0)) return -1;
    return w <= ID_EXACT_MAX ? int(w) - 1 : int(floatBitsToUint(w) - ID_BITS_BASE) - 1;
}

// z/w of triangle t at this fragment's pixel centre.
float depth_at(int t) {
    vec4 p0 = pos[vertex_base + tri[3 * t + 0]];
    vec4 p1 = pos[vertex_base + tri[3 * t + 1]];
    vec4 p2 = pos[vertex_base + tri[3 * t + 2]];
    float xn = gl_FragCoord.x * ndc_scale.x - 1.0;
    float yn = gl_FragCoord.y * ndc_scale.y - 1.0;
    vec3 c = vec3(p1.x * p2.y - p2.x * p1.y, p2.x * p0.y - p0.x * p2.y, p0.x * p1.y - p1.x * p0.y);
    vec3 a = vec3(p1.y * p2.w - p2.y * p1.w, p2.y * p0.w - p0.y * p2.w, p0.y * p1.w - p1.y * p0.w);
    vec3 b = vec3(p2.x * p1.w - p1.x * p2.w, p0.x * p2.w - p2.x * p0.w, p1.x * p0.w - p0.x * p1.w);
    vec3 L = c + a * xn + b * yn;
    precise float zw = dot(L, vec3(p0.z, p1.z, p2.z)) / dot(L, vec3(p0.w, p1.w, p2.w));
    return zw;
}
#endif

void main() {
    int t = tri_base + gl_PrimitiveID;
#ifdef PEEL
    int prev = decode_id(texelFetch(prev_id, ivec2(gl_FragCoord.xy), 0).r);
    if (prev < 0 || !(depth_at(t) > depth_at(prev))) discard;
#endif
    out_id = uint(t) + 1u;
}
