#version 430
// Writes the id + 1 of the visible triangle (0 stays for empty pixels). The
// fixed-function rasterizer decides coverage and the depth test decides
// visibility; csrc/raster.cu computes (u, v, z/w) and their derivatives from
// the id afterwards, which keeps this stage (llvmpipe runs it per 2x2 quad of
// every tiny triangle) and the render target (4 bytes a pixel) small.
//
// With PEEL defined (depth peeling), fragments at or in front of the previous
// layer are discarded: z/w is evaluated here with the closed form of
// csrc/raster.cu, and the previous layer's own triangle is excluded by id so
// that rounding cannot return it.
uniform int tri_base;     // index of the first triangle of this draw
layout(location = 0) out uint out_id;

#ifdef PEEL
layout(std430, binding = 0) readonly buffer Positions { vec4 pos[]; };
layout(std430, binding = 1) readonly buffer Triangles { int tri[]; };
uniform int vertex_base;
uniform vec2 ndc_scale;   // (2 / W, 2 / H)
uniform sampler2D prev_rast;

float encode_id(uint id1) {
    return id1 <= 16777216u ? float(id1) : uintBitsToFloat(0x4A800000u + id1);
}
#endif

void main() {
    uint id1 = uint(tri_base + gl_PrimitiveID) + 1u;
#ifdef PEEL
    vec4 prev = texelFetch(prev_rast, ivec2(gl_FragCoord.xy), 0);
    if (prev.w == 0.0 || prev.w == encode_id(id1)) discard;
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
    float zw = dot(L, vec3(p0.z, p1.z, p2.z)) / dot(L, vec3(p0.w, p1.w, p2.w));
    if (!(zw > prev.z)) discard;
#endif
    out_id = id1;
}
