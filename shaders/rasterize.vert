#version 430
// Vertex pulling: positions live in a storage buffer shared with the fragment
// stage, so no vertex attributes (and no geometry shader) are needed.
layout(std430, binding = 0) readonly buffer Positions { vec4 pos[]; };
uniform int vertex_base;  // first vertex of this image's position set (instanced mode)

void main() {
    gl_Position = pos[vertex_base + gl_VertexID];
}
