// The two-compiler shim: every kernel source in csrc/ is compiled both by
// NVRTC (CUDA tensors) and by the host C++ compiler (CPU tensors).
//
// A kernel is written once as a per-element body:
//
//     GLRAST_KERNEL(my_op_fwd, MyOpParams) { ... uses p (the params) and i ... }
//
// which expands to two entry points with the same name and meaning:
//   CUDA: extern "C" __global__ void my_op_fwd(MyOpParams p, i64 n)   (grid-stride loop)
//   host: extern "C" void my_op_fwd(const MyOpParams* p, i64 n)      (OpenMP loop)
// Nothing emulates threadIdx on the host; bodies must not rely on block-level
// cooperation (no __shared__, no __syncthreads, no warp intrinsics).
#pragma once

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
#define GLRAST_DEVICE_BUILD 1
#define GLRAST_HD __device__ __forceinline__
typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;

GLRAST_HD float atomic_add_f32(float* addr, float value) { return atomicAdd(addr, value); }
GLRAST_HD int atomic_cas_i32(int* addr, int expected, int desired) { return atomicCAS(addr, expected, desired); }
GLRAST_HD u64 atomic_cas_u64(u64* addr, u64 expected, u64 desired) { return atomicCAS(addr, expected, desired); }
GLRAST_HD int float_bits(float x) { return __float_as_int(x); }
GLRAST_HD float bits_float(int x) { return __int_as_float(x); }
GLRAST_HD bool is_finite_f32(float x) { return isfinite(x); }
GLRAST_HD int thread_slot() { return 0; }

#define GLRAST_ENTRY(NAME, PARAMS)                                                          \
    extern "C" __global__ void NAME(const PARAMS p, i64 n) {                                \
        for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n;                     \
             i += (i64)blockDim.x * gridDim.x)                                              \
            NAME##_body(p, i);                                                              \
    }

#else  // host build
#include <math.h>
#include <omp.h>
#include <string.h>
#include <atomic>
#include <cstdint>
#define GLRAST_HD inline
typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;

// Relaxed atomics match CUDA's atomicAdd/atomicCAS (no ordering guarantees).
GLRAST_HD float atomic_add_f32(float* addr, float value) {
    return std::atomic_ref<float>(*addr).fetch_add(value, std::memory_order_relaxed);
}
GLRAST_HD int atomic_cas_i32(int* addr, int expected, int desired) {
    std::atomic_ref<int>(*addr).compare_exchange_strong(expected, desired, std::memory_order_relaxed);
    return expected;  // the old value, as CUDA's atomicCAS returns it
}
GLRAST_HD u64 atomic_cas_u64(u64* addr, u64 expected, u64 desired) {
    std::atomic_ref<u64>(*addr).compare_exchange_strong(expected, desired, std::memory_order_relaxed);
    return expected;
}
GLRAST_HD int float_bits(float x) { int r; memcpy(&r, &x, 4); return r; }
GLRAST_HD float bits_float(int x) { float r; memcpy(&r, &x, 4); return r; }
GLRAST_HD bool is_finite_f32(float x) { return isfinite(x); }
GLRAST_HD int thread_slot() { return omp_get_thread_num(); }
// How many accumulation slots a launch may use (see Accumulator).
extern "C" int glrast_num_threads() { return omp_get_max_threads(); }

#define GLRAST_ENTRY(NAME, PARAMS)                                                          \
    extern "C" void NAME(const PARAMS* pp, i64 n) {                                         \
        const PARAMS p = *pp;                                                               \
        _Pragma("omp parallel for schedule(dynamic, 1024)")                                 \
        for (i64 i = 0; i < n; ++i) NAME##_body(p, i);                                      \
    }
#endif

// A gradient buffer for scatter-adds from many threads. With one slot it is
// the buffer itself, updated with atomics (always on CUDA). With one slot per
// host thread (count = glrast_num_threads(), slot k at data + k * size), each
// thread adds into its own copy without atomics and the caller sums the slots:
// on a CPU an uncontended atomic float add costs a compare-and-swap loop,
// which dominated the vertex-gradient scatters.
struct Accumulator {
    float* data;
    i64 size;   // floats per slot
    int count;  // number of slots
};

GLRAST_HD void accumulate(const Accumulator& acc, i64 index, float value) {
    if (acc.count == 1)
        atomic_add_f32(acc.data + index, value);
    else
        acc.data[thread_slot() * acc.size + index] += value;
}

// Largest finite float, for gradients that saturate there (see saturate_f32).
#define GLRAST_FLT_MAX 3.402823466e+38f

// x clamped to the finite floats: a derivative whose true value lies beyond float's range comes out
// as the largest float of its sign instead of an infinity (NaN stays NaN).
GLRAST_HD float saturate_f32(double x) {
    if (x != x) return (float)x;
    return (float)(x > (double)GLRAST_FLT_MAX ? (double)GLRAST_FLT_MAX : (x < -(double)GLRAST_FLT_MAX ? -(double)GLRAST_FLT_MAX : x));
}

// A mean or blend computed in double back to float: the nearest float, the largest finite one where
// rounding stepped just past float's range; infinities and NaN (from non-finite input) as they are.
GLRAST_HD float narrow_f32(double x) { return isfinite(x) ? saturate_f32(x) : (float)x; }

// The power of two 2^e by which to divide numbers of largest magnitude m so that products and sums
// of a few of them neither overflow nor underflow: e = 0 where m already lies in [2^-64, 2^64]
// (the common case costs one comparison), else m's binary exponent. Apply with ldexpf(x, -e).
GLRAST_HD int rescale_exponent(float m) {
    if (m >= 5.421010862e-20f && m <= 1.844674407e+19f) return 0;
    if (!(m > 0.f) || !is_finite_f32(m)) return 0;  // zero, NaN, infinity: nothing to rescale
    int e;
    frexpf(m, &e);
    return e;
}

#define GLRAST_KERNEL(NAME, PARAMS)                                                         \
    GLRAST_HD void NAME##_body(const PARAMS& p, i64 i);                                     \
    GLRAST_ENTRY(NAME, PARAMS)                                                              \
    GLRAST_HD void NAME##_body(const PARAMS& p, i64 i)

// ---------------------------------------------------------------------------
// Triangle ids in rast[..., 3]: id + 1 as an exact float up to 2^24, above that
// the float whose bit pattern is 0x4A800000 + id + 1 (monotone, continuous at
// 2^24). Returns -1 for an empty pixel.
GLRAST_HD int decode_triangle_id(float w) {
    if (!(w > 0.f)) return -1;
    if (w <= 16777216.f) return (int)w - 1;
    return float_bits(w) - 0x4A800000 - 1;
}
