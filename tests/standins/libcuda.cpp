// A stand-in libcuda.so.1 for tests/test_cuda_driver.py (no GPU needed): it logs
// every driver call glrast makes, with the context current at the time, to
// $FAKE_CUDA_LOG, and fails one chosen call on request (fake_fail). Module
// globals (the layouts and constants the loader checks) are read from the host
// builds of the same kernel sources, $FAKE_CUDA_GLOBALS (colon-separated; the
// first that has the symbol answers), which export the same symbols with the
// same values.
#include <dlfcn.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
typedef int CUresult;
typedef unsigned long long u64;
struct Memcpy2D {  // CUDA_MEMCPY2D
    size_t srcXInBytes, srcY; int srcMemoryType; const void* srcHost; u64 srcDevice; void* srcArray; size_t srcPitch;
    size_t dstXInBytes, dstY; int dstMemoryType; void* dstHost; u64 dstDevice; void* dstArray; size_t dstPitch;
    size_t WidthInBytes, Height;
};
static __thread u64 stack[16];
static __thread int depth;
static char fail_name[64];
static CUresult fail_code;
static int fail_skip;
static FILE* out() {
    static FILE* f;
    if (!f) { f = fopen(getenv("FAKE_CUDA_LOG"), "w"); setvbuf(f, NULL, _IOLBF, 0); }
    return f;
}
static CUresult call(const char* name, const char* fmt, ...) {
    fprintf(out(), "%s ctx=%#llx", name, depth ? stack[depth - 1] : 0ULL);
    va_list ap; va_start(ap, fmt); vfprintf(out(), fmt, ap); va_end(ap);
    fputc('\n', out());
    if (strcmp(name, fail_name) == 0 && fail_skip-- == 0) { fail_name[0] = 0; return fail_code; }
    return 0;
}
// The call `name` after `skip` successful ones returns `code`.
void fake_fail(const char* name, int code, int skip) {
    strncpy(fail_name, name, 63);
    fail_code = code;
    fail_skip = skip;
}
// A line of the caller's own in the log, to order its steps among the driver calls.
void fake_note(const char* text) { call("note", " %s", text); }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return 0; }
CUresult cuGetProcAddress_v2(const char* sym, void** pfn, int, u64, int* status) {
    *pfn = dlsym(RTLD_DEFAULT, sym);
    if (status) *status = *pfn ? 0 : 1;
    return *pfn ? 0 : 500;
}
CUresult cuGetProcAddress(const char* sym, void** pfn, int v, u64 f) {
    return cuGetProcAddress_v2(sym, pfn, v, f, NULL);
}
CUresult cuInit(unsigned) { return call("cuInit", ""); }
CUresult cuDeviceGet(int* dev, int ordinal) { *dev = ordinal; return call("cuDeviceGet", " %d", ordinal); }
CUresult cuDeviceGetPCIBusId(char* s, int len, int dev) { snprintf(s, len, "0000:%02X:00.0", 10 + dev); return 0; }
CUresult cuDevicePrimaryCtxRetain(u64* ctx, int dev) {
    *ctx = 0x1000 + dev;
    return call("cuDevicePrimaryCtxRetain", " %d", dev);
}
CUresult cuCtxGetCurrent(u64* ctx) { *ctx = depth ? stack[depth - 1] : 0; return 0; }
CUresult cuCtxPushCurrent(u64 ctx) { stack[depth++] = ctx; return call("cuCtxPushCurrent", " %#llx", ctx); }
CUresult cuCtxPopCurrent(u64* ctx) { CUresult r = call("cuCtxPopCurrent", ""); *ctx = stack[--depth]; return r; }
CUresult cuModuleLoadData(u64* mod, const void* image) {
    *mod = 0x4000;
    int elf = memcmp(image, "\x7f" "ELF", 4) == 0;  // a cubin; else NUL-terminated PTX text
    int entry = !elf && strstr((const char*)image, ".entry interpolate_fwd") != NULL;
    return call("cuModuleLoadData", " elf=%d ptx_entry=%d", elf, entry);
}
CUresult cuModuleGetGlobal(u64* dptr, size_t* bytes, u64 mod, const char* name) {
    static void* hosts[8];
    static int count = -1;
    if (count < 0) {
        count = 0;
        char paths[4096];
        strncpy(paths, getenv("FAKE_CUDA_GLOBALS"), sizeof paths - 1);
        for (char* path = strtok(paths, ":"); path && count < 8; path = strtok(NULL, ":"))
            hosts[count++] = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
    void* sym = NULL;
    for (int k = 0; k < count && !sym; ++k) sym = hosts[k] ? dlsym(hosts[k], name) : NULL;
    const ElfW(Sym)* entry = NULL;
    Dl_info info;
    if (sym) dladdr1(sym, &info, (void**)&entry, RTLD_DL_SYMENT);
    *dptr = (u64)sym;
    *bytes = entry ? entry->st_size : 0;
    CUresult r = call("cuModuleGetGlobal", " %#llx %s", mod, name);
    return r ? r : sym ? 0 : 500;  // CUDA_ERROR_NOT_FOUND
}
CUresult cuMemcpyDtoH(void* dst, u64 src, size_t n) {
    memcpy(dst, (const void*)src, n);
    return call("cuMemcpyDtoH", " %zu", n);
}
CUresult cuModuleGetFunction(u64* fn, u64 mod, const char* name) {
    *fn = 0x5000;
    return call("cuModuleGetFunction", " %#llx %s", mod, name);
}
CUresult cuLaunchKernel(u64 fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, u64 stream, void** params, void** extra) {
    const u64* p = (const u64*)params[0];  // the params struct's first four 8-byte words
    return call("cuLaunchKernel",
                " %#llx grid=%u,%u,%u block=%u,%u,%u shared=%u stream=%#llx p=%#llx,%lld,%#llx,%#llx n=%lld%s", fn, gx,
                gy, gz, bx, by, bz, shared, stream, p[0], (long long)p[1], p[2], p[3], *(const long long*)params[1],
                extra ? " extra" : "");
}
CUresult cuGraphicsGLRegisterImage(u64* res, unsigned image, unsigned target, unsigned flags) {
    *res = 0x2000 + image;
    return call("cuGraphicsGLRegisterImage", " %u %#x %u", image, target, flags);
}
CUresult cuGraphicsGLRegisterBuffer(u64* res, unsigned buffer, unsigned flags) {
    *res = 0x6000 + buffer;
    return call("cuGraphicsGLRegisterBuffer", " %u %u", buffer, flags);
}
CUresult cuGraphicsResourceGetMappedPointer(u64* ptr, size_t* size, u64 res) {
    *ptr = res << 20;
    *size = 4096;
    return call("cuGraphicsResourceGetMappedPointer", " %#llx", res);
}
CUresult cuGraphicsMapResources(unsigned count, const u64* res, u64 stream) {
    return call("cuGraphicsMapResources", " %u %#llx %#llx stream=%#llx", count, res[0], count > 1 ? res[1] : 0,
                stream);
}
CUresult cuGraphicsUnmapResources(unsigned count, const u64* res, u64 stream) {
    return call("cuGraphicsUnmapResources", " %u %#llx %#llx stream=%#llx", count, res[0], count > 1 ? res[1] : 0,
                stream);
}
CUresult cuGraphicsSubResourceGetMappedArray(u64* arr, u64 res, unsigned index, unsigned level) {
    *arr = res + 0x1000;
    return call("cuGraphicsSubResourceGetMappedArray", " %#llx %u %u", res, index, level);
}
CUresult cuMemcpy2DAsync(const Memcpy2D* c, u64 stream) {  // 3 = CU_MEMORYTYPE_ARRAY, 2 = device memory
    u64 src = c->srcMemoryType == 3 ? (u64)c->srcArray : c->srcDevice;
    u64 dst = c->dstMemoryType == 3 ? (u64)c->dstArray : c->dstDevice;
    return call("cuMemcpy2DAsync", " src=%d,%#llx,x=%zu,y=%zu,pitch=%zu dst=%d,%#llx,x=%zu,y=%zu,pitch=%zu"
                " size=%zux%zu stream=%#llx", c->srcMemoryType, src, c->srcXInBytes, c->srcY, c->srcPitch,
                c->dstMemoryType, dst, c->dstXInBytes, c->dstY, c->dstPitch, c->WidthInBytes, c->Height, stream);
}
CUresult cuGraphicsUnregisterResource(u64 res) { return call("cuGraphicsUnregisterResource", " %#llx", res); }
}
