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
// Exports that glrast/kernels.py checks once per loaded module against its
// Python mirrors: the size and field offsets of each params struct
// (GLRAST_LAYOUT), and the values of constants that Python also uses
// (GLRAST_CONSTANTS). A mirror that drifts from the C code then fails at load
// with the name of the field or constant, instead of a kernel reading garbage.
//     GLRAST_LAYOUT(MyParams, field_a, field_b, ...)   every field, in order
// defines glrast_layout_MyParams = {sizeof, offset of each field} (i64) and
// glrast_fields_MyParams = "field_a, field_b, ..."; in the CUDA build both are
// __device__ globals, read back with cuModuleGetGlobal.
#ifdef GLRAST_DEVICE_BUILD
#define GLRAST_EXPORTED extern "C" __device__ const
#else
#define GLRAST_EXPORTED extern "C" const
#endif

#define GLRAST_FE_1(M, S, x) M(S, x)
#define GLRAST_FE_2(M, S, x, ...) M(S, x) GLRAST_FE_1(M, S, __VA_ARGS__)
#define GLRAST_FE_3(M, S, x, ...) M(S, x) GLRAST_FE_2(M, S, __VA_ARGS__)
#define GLRAST_FE_4(M, S, x, ...) M(S, x) GLRAST_FE_3(M, S, __VA_ARGS__)
#define GLRAST_FE_5(M, S, x, ...) M(S, x) GLRAST_FE_4(M, S, __VA_ARGS__)
#define GLRAST_FE_6(M, S, x, ...) M(S, x) GLRAST_FE_5(M, S, __VA_ARGS__)
#define GLRAST_FE_7(M, S, x, ...) M(S, x) GLRAST_FE_6(M, S, __VA_ARGS__)
#define GLRAST_FE_8(M, S, x, ...) M(S, x) GLRAST_FE_7(M, S, __VA_ARGS__)
#define GLRAST_FE_9(M, S, x, ...) M(S, x) GLRAST_FE_8(M, S, __VA_ARGS__)
#define GLRAST_FE_10(M, S, x, ...) M(S, x) GLRAST_FE_9(M, S, __VA_ARGS__)
#define GLRAST_FE_11(M, S, x, ...) M(S, x) GLRAST_FE_10(M, S, __VA_ARGS__)
#define GLRAST_FE_12(M, S, x, ...) M(S, x) GLRAST_FE_11(M, S, __VA_ARGS__)
#define GLRAST_FE_13(M, S, x, ...) M(S, x) GLRAST_FE_12(M, S, __VA_ARGS__)
#define GLRAST_FE_14(M, S, x, ...) M(S, x) GLRAST_FE_13(M, S, __VA_ARGS__)
#define GLRAST_FE_15(M, S, x, ...) M(S, x) GLRAST_FE_14(M, S, __VA_ARGS__)
#define GLRAST_FE_16(M, S, x, ...) M(S, x) GLRAST_FE_15(M, S, __VA_ARGS__)
#define GLRAST_FE_17(M, S, x, ...) M(S, x) GLRAST_FE_16(M, S, __VA_ARGS__)
#define GLRAST_FE_18(M, S, x, ...) M(S, x) GLRAST_FE_17(M, S, __VA_ARGS__)
#define GLRAST_FE_19(M, S, x, ...) M(S, x) GLRAST_FE_18(M, S, __VA_ARGS__)
#define GLRAST_FE_20(M, S, x, ...) M(S, x) GLRAST_FE_19(M, S, __VA_ARGS__)
#define GLRAST_FE_21(M, S, x, ...) M(S, x) GLRAST_FE_20(M, S, __VA_ARGS__)
#define GLRAST_FE_22(M, S, x, ...) M(S, x) GLRAST_FE_21(M, S, __VA_ARGS__)
#define GLRAST_FE_23(M, S, x, ...) M(S, x) GLRAST_FE_22(M, S, __VA_ARGS__)
#define GLRAST_FE_24(M, S, x, ...) M(S, x) GLRAST_FE_23(M, S, __VA_ARGS__)
#define GLRAST_FE_PICK(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17, _18, _19, \
                       _20, _21, _22, _23, _24, NAME, ...) NAME
// M(S, x) for each x of the (up to 24) arguments after S.
#define GLRAST_FOR_EACH(M, S, ...)                                                                         \
    GLRAST_FE_PICK(__VA_ARGS__, GLRAST_FE_24, GLRAST_FE_23, GLRAST_FE_22, GLRAST_FE_21, GLRAST_FE_20,      \
                   GLRAST_FE_19, GLRAST_FE_18, GLRAST_FE_17, GLRAST_FE_16, GLRAST_FE_15, GLRAST_FE_14,     \
                   GLRAST_FE_13, GLRAST_FE_12, GLRAST_FE_11, GLRAST_FE_10, GLRAST_FE_9, GLRAST_FE_8,       \
                   GLRAST_FE_7, GLRAST_FE_6, GLRAST_FE_5, GLRAST_FE_4, GLRAST_FE_3, GLRAST_FE_2,           \
                   GLRAST_FE_1)(M, S, __VA_ARGS__)

#define GLRAST_OFFSET_OF(S, field) (i64) __builtin_offsetof(S, field),
#define GLRAST_LAYOUT(S, ...)                                                                              \
    GLRAST_EXPORTED i64 glrast_layout_##S[] = {(i64)sizeof(S), GLRAST_FOR_EACH(GLRAST_OFFSET_OF, S, __VA_ARGS__)}; \
    GLRAST_EXPORTED char glrast_fields_##S[] = #__VA_ARGS__;

#define GLRAST_VALUE_OF(GROUP, name) (i64)(name),
#define GLRAST_CONSTANTS(GROUP, ...)                                                                       \
    GLRAST_EXPORTED i64 glrast_constants_##GROUP[] = {GLRAST_FOR_EACH(GLRAST_VALUE_OF, GROUP, __VA_ARGS__)}; \
    GLRAST_EXPORTED char glrast_constant_names_##GROUP[] = #__VA_ARGS__;

GLRAST_LAYOUT(Accumulator, data, size, count)

// ---------------------------------------------------------------------------
// Triangle ids in rast[..., 3]: id + 1 as an exact float up to 2^24, above that
// the float whose bit pattern is GLRAST_ID_BITS_BASE + id + 1 (monotone and
// continuous at 2^24, since GLRAST_ID_BITS_BASE + 2^24 is the bit pattern of
// the float 2^24). GLRAST_ID_LIMIT is the largest id + 1 encodable (its
// pattern is FLT_MAX's). The fragment shader gets these values as #defines
// generated from glrast/ids.py, which the loader checks against this list.
#define GLRAST_ID_EXACT_MAX 16777216
#define GLRAST_ID_BITS_BASE 0x4A800000
#define GLRAST_ID_LIMIT 0x34FFFFFF
GLRAST_CONSTANTS(triangle_ids, GLRAST_ID_EXACT_MAX, GLRAST_ID_BITS_BASE, GLRAST_ID_LIMIT)

// The id + 1 of triangle `id1 - 1` as rast[..., 3] stores it.
GLRAST_HD float encode_triangle_id(int id1) {
    return id1 <= GLRAST_ID_EXACT_MAX ? (float)id1 : bits_float(GLRAST_ID_BITS_BASE + id1);
}

// The triangle id held by rast[..., 3]; -1 for an empty pixel.
GLRAST_HD int decode_triangle_id(float w) {
    if (!(w > 0.f)) return -1;
    if (w <= (float)GLRAST_ID_EXACT_MAX) return (int)w - 1;
    return float_bits(w) - GLRAST_ID_BITS_BASE - 1;
}
