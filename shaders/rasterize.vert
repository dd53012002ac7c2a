#version 430
// Positions come in as a plain vertex attribute (llvmpipe fetches attributes
// faster than storage buffers); the image's position set is selected by the
// attribute's buffer offset.
layout(location = 0) in vec4 in_pos;

void main() {
    gl_Position = in_pos;
}
