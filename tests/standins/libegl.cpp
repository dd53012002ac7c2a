// A stand-in libEGL for tests/test_egl.py: Mesa's software device and two NVIDIA
// devices, one of them hidden from CUDA, behind the calls glrast/egl.py makes.
#include <string.h>
extern "C" {
typedef void* Dev;
static int devs[3];  // their addresses serve as device handles
static int last_error = 0x3000;
int eglGetError() { int e = last_error; last_error = 0x3000; return e; }
const char* eglQueryString(void* dpy, int name) {
    return dpy == 0 && name == 0x3055 ? "EGL_EXT_device_enumeration" : 0;
}
unsigned eglQueryDevicesEXT(int max, Dev* out, int* count) {
    if (out) for (int i = 0; i < max && i < 3; ++i) out[i] = &devs[i];
    *count = out ? (max < 3 ? max : 3) : 3;
    return 1;
}
const char* eglQueryDeviceStringEXT(Dev d, int name) {
    int i = (int*)d - devs;
    if (name == 0x3055) return i == 0 ? "EGL_MESA_device_software EGL_EXT_device_drm_render_node"
                                      : "EGL_NV_device_cuda EGL_EXT_device_drm";
    if (name == 0x3233 && i > 0) return i == 1 ? "/dev/dri/card-glrast-test1" : "/dev/dri/card-glrast-test2";
    last_error = 0x300C;  // EGL_BAD_PARAMETER
    return 0;
}
unsigned eglQueryDeviceAttribEXT(Dev d, int name, long* value) {
    int i = (int*)d - devs;
    if (name != 0x323A || i != 2) { last_error = 0x3004; return 0; }  // only device 2 is visible to CUDA
    *value = 0;
    return 1;
}
void* eglGetProcAddress(const char* name) {
    if (!strcmp(name, "eglQueryDevicesEXT")) return (void*)eglQueryDevicesEXT;
    if (!strcmp(name, "eglQueryDeviceStringEXT")) return (void*)eglQueryDeviceStringEXT;
    if (!strcmp(name, "eglQueryDeviceAttribEXT")) return (void*)eglQueryDeviceAttribEXT;
    return 0;
}
}
