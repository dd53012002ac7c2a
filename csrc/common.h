// The two-compiler shim: every kernel source in csrc/ is compiled both by
// NVRTC (CUDA tensors) and by the host C++ compiler (CPU tensors).
//
// A kernel is written once as a per-element body:
//
//     GLRAST_KERNEL(my_op_fwd, MyOpParams) { ... uses p (the params) and i ... }
//
// which expands to two entry points with the same name and meaning:
//   CUDA: extern "C" __global__ void my_op_fwd(MyOpParams p, i64 n)   (grid-stride loop)
//   host: extern "C" void my_op_fwd(const MyOpParams* p, i64 n, int threads)
//         (chunks of the loop on a thread pool, see glrast_host below)
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
GLRAST_HD u64 atomic_add_u64(u64* addr, u64 value) { return atomicAdd(addr, value); }
// Reads first: once the running maximum is reached, most calls need no atomic.
GLRAST_HD void atomic_max_u32(u32* addr, u32 value) {
    if (value > *(volatile u32*)addr) atomicMax(addr, value);
}
GLRAST_HD int float_bits(float x) { return __float_as_int(x); }
GLRAST_HD float bits_float(int x) { return __int_as_float(x); }
GLRAST_HD double bits_double(i64 x) { return __longlong_as_double(x); }
GLRAST_HD bool is_finite_f32(float x) { return isfinite(x); }
GLRAST_HD int thread_slot() { return 0; }
GLRAST_HD void prefetch(const void*) {}  // a warp's other loads hide the latency

#define GLRAST_ENTRY(NAME, PARAMS)                                                          \
    extern "C" __global__ void NAME(const PARAMS p, i64 n) {                                \
        for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n;                     \
             i += (i64)blockDim.x * gridDim.x)                                              \
            NAME##_body(p, i);                                                              \
    }

#else  // host build
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <thread>
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
GLRAST_HD u64 atomic_add_u64(u64* addr, u64 value) {
    return std::atomic_ref<u64>(*addr).fetch_add(value, std::memory_order_relaxed);
}
GLRAST_HD void atomic_max_u32(u32* addr, u32 value) {
    std::atomic_ref<u32> cell(*addr);
    for (u32 seen = cell.load(std::memory_order_relaxed);
         value > seen && !cell.compare_exchange_weak(seen, value, std::memory_order_relaxed);) {
    }
}
GLRAST_HD int float_bits(float x) { int r; memcpy(&r, &x, 4); return r; }
GLRAST_HD float bits_float(int x) { float r; memcpy(&r, &x, 4); return r; }
GLRAST_HD double bits_double(i64 x) { double r; memcpy(&r, &x, 8); return r; }
GLRAST_HD bool is_finite_f32(float x) { return isfinite(x); }
// A hint that *p is read soon: a gather whose loads miss the cache stalls a CPU thread, which has
// no other threads to switch to as a GPU's warp scheduler does.
GLRAST_HD void prefetch(const void* p) { __builtin_prefetch(p); }

// Host launches run on a thread pool of this library's own rather than OpenMP's:
// between launches its workers sleep in the kernel (C++20 atomic wait = futex) instead
// of spinning, so they leave the cores to torch, llvmpipe and other processes; a launch
// wakes only as many workers as it has chunks for (a launch of one chunk runs on the
// caller alone) and never waits for a worker that has not started: the caller works
// through the chunks itself and waits only for chunks a worker has taken. A forked
// child, which has no copy of its parent's workers, starts a fresh pool on its first
// launch. The caller passes the number of threads per launch.
namespace glrast_host {

typedef void (*RangeFn)(const void* params, i64 begin, i64 end);
constexpr i64 CHUNK = 1024;  // elements handed out at a time (dynamic scheduling)
constexpr int MAX_THREADS = 256;

// The calling thread's slot in the launch it is working on: 0 for the caller,
// k for the k-th worker it woke; stable for the whole launch (see Accumulator).
__attribute__((tls_model("initial-exec"))) inline thread_local int slot = 0;

// Waits until `a` no longer holds `old`: polls for up to SPIN_NS first (a launch often
// follows the previous one within microseconds, and a worker that is still awake costs
// no wake-up: a futex wake may even preempt the caller on its own core), then sleeps.
constexpr i64 SPIN_NS = 50000;
template <class T>
inline void await_change(const std::atomic<T>& a, T old) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(SPIN_NS);
    for (int i = 0;; ++i) {
        if (a.load() != old) return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
        if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) break;
    }
    a.wait(old);
}

struct alignas(64) Ticket {
    std::atomic<u32> launch{0};  // the last launch that woke this worker
};

struct Pool {
    std::mutex launching;  // one launch at a time per library
    int started = 0;       // workers created so far
    u32 last_launch = 0;   // launch ids count up from 1; 0 = none open
    RangeFn fn = nullptr;  // the open launch
    const void* params = nullptr;
    i64 n = 0;
    alignas(64) std::atomic<u32> open{0};    // id of the launch whose chunks may be taken
    alignas(64) std::atomic<i64> next{0};    // its first element not handed out yet
    alignas(64) std::atomic<int> inside{0};  // workers that may be taking chunks
    Ticket tickets[MAX_THREADS - 1];
};

inline void run_chunks(Pool& pool, int my_slot) {
    slot = my_slot;
    for (i64 begin; (begin = pool.next.fetch_add(CHUNK, std::memory_order_relaxed)) < pool.n;)
        pool.fn(pool.params, begin, std::min(begin + CHUNK, pool.n));
}

inline void work(Pool* pool, int k) {
    pthread_setname_np(pthread_self(), "glrast-host");
    for (u32 seen = 0;;) {
        await_change(pool->tickets[k].launch, seen);
        seen = pool->tickets[k].launch.load();
        // Announce, then check the launch is still open (both seq_cst): either the caller
        // sees this worker inside and waits for it, or the worker sees the launch closed.
        pool->inside.fetch_add(1);
        if (pool->open.load() == seen) run_chunks(*pool, k + 1);
        if (pool->inside.fetch_sub(1) == 1) pool->inside.notify_one();
    }
}

inline std::atomic<Pool*> live_pool{nullptr};

// This process's pool. A forked child forgets its parent's (never freed: its mutex
// may be held and its workers do not exist in the child) and creates its own.
inline Pool* pool() {
    Pool* current = live_pool.load(std::memory_order_acquire);
    if (current) return current;
    static const int at_fork = pthread_atfork(nullptr, nullptr, [] { live_pool.store(nullptr); });
    (void)at_fork;
    Pool* fresh = new Pool();
    if (live_pool.compare_exchange_strong(current, fresh)) return fresh;
    delete fresh;  // another thread created one first
    return current;
}

// Runs fn over [0, n) in chunks on up to `threads` threads, the caller included.
inline void parallel_for(RangeFn fn, const void* params, i64 n, int threads) {
    const i64 chunks = (n + CHUNK - 1) / CHUNK;
    int helpers = (int)std::min<i64>({(i64)threads - 1, chunks - 1, (i64)MAX_THREADS - 1});
    Pool* p = helpers > 0 ? pool() : nullptr;
    std::unique_lock<std::mutex> lock;
    if (p) lock = std::unique_lock<std::mutex>(p->launching, std::try_to_lock);
    if (!lock.owns_lock()) {  // one chunk, one thread, or another thread's launch holds the pool
        slot = 0;
        fn(params, 0, n);
        return;
    }
    try {
        for (; p->started < helpers; ++p->started) std::thread(work, p, p->started).detach();
    } catch (const std::system_error&) {  // no more threads: run with those there are
        helpers = p->started;
    }
    const u32 id = p->last_launch = p->last_launch == UINT32_MAX ? 1 : p->last_launch + 1;
    p->fn = fn;
    p->params = params;
    p->n = n;
    p->next.store(0);
    p->open.store(id);
    for (int k = 0; k < helpers; ++k) {
        p->tickets[k].launch.store(id);
        p->tickets[k].launch.notify_one();
    }
    run_chunks(*p, 0);
    p->open.store(0);  // every chunk is taken; wait for those still running on workers
    for (int left; (left = p->inside.load()) != 0;) await_change(p->inside, left);
    slot = 0;
}

}  // namespace glrast_host

GLRAST_HD int thread_slot() { return glrast_host::slot; }

#define GLRAST_ENTRY(NAME, PARAMS)                                                          \
    static void NAME##_range(const void* pp, i64 begin, i64 end) {                          \
        const PARAMS p = *(const PARAMS*)pp;                                                \
        for (i64 i = begin; i < end; ++i) NAME##_body(p, i);                                \
    }                                                                                       \
    extern "C" void NAME(const PARAMS* pp, i64 n, int threads) {                            \
        glrast_host::parallel_for(NAME##_range, pp, n, threads);                            \
    }
#endif

// Largest finite float, for gradients that saturate there (see saturate_f32).
#define GLRAST_FLT_MAX 3.402823466e+38f

// A gradient buffer for scatter-adds from many threads, in one of three modes.
//
// GLRAST_ACC_FLOAT (the default): float sums. With one slot (count = 1, always on CUDA) `data` is
// the gradient itself, updated with atomics. With one slot per host thread of the launch, slot 0
// is `data` and slot k > 0 lies at spare + (k - 1) * size; each thread adds into its own copy
// without atomics and Python adds the spares into `data`: on a CPU an uncontended atomic float
// add costs a compare-and-swap loop, which dominated the vertex-gradient scatters. Float addition
// is not associative, so the result depends on which thread (or CUDA atomic) adds what first.
//
// Deterministic mode (torch.use_deterministic_algorithms): the scatter kernel runs twice over
// the same input. In GLRAST_ACC_PEAK (pass 1) accumulate only records, per entry, the largest
// |value| in `peak` as its float bits (ordered like the magnitudes they encode; an atomic max is
// order-independent), or GLRAST_PEAK_NAN once a NaN arrives. In GLRAST_ACC_FIXED (pass 2) it
// adds value * 2^(GLRAST_FIXED_BITS - e), rounded to an integer, into the entry's 128-bit sum
// `data[2 index]` (low word), `data[2 index + 1]` (high word) with integer atomics (one slot: per-
// thread copies measured no faster on the host, and would take 16 bytes an entry each), where
// peak < 2^e: every term is
// below 2^GLRAST_FIXED_BITS in magnitude and integer addition is exact, so the sum is the same
// bits in any order. Python converts it back (kernels.collect). An entry's resolution is
// 2^-GLRAST_FIXED_BITS of its largest term per term added; infinite terms count as the largest
// float (the value a gradient saturates to anyway).
#define GLRAST_ACC_FLOAT 0
#define GLRAST_ACC_PEAK 1
#define GLRAST_ACC_FIXED 2
#define GLRAST_FIXED_BITS 40
#define GLRAST_PEAK_NAN 0xFFFFFFFFu

struct Accumulator {
    void* data;    // FLOAT: float slot 0; PEAK, FIXED: [size][2] int64 (low, high) sums
    float* spare;  // FLOAT with count > 1: slots 1 .. count - 1
    u32* peak;     // PEAK, FIXED: [size] largest |term| per entry, as float bits
    i64 size;      // entries per slot
    int count;     // number of slots
    int mode;      // GLRAST_ACC_*
};

// |value|'s float bits, ordered as the magnitudes: infinity as the largest float, NaN above all.
GLRAST_HD u32 magnitude_bits(float value) {
    u32 b = (u32)float_bits(value) & 0x7FFFFFFFu;
    return b > 0x7F800000u ? GLRAST_PEAK_NAN : (b == 0x7F800000u ? 0x7F7FFFFFu : b);
}

// Adds q to the 128-bit two's complement number at cell (low word first) with atomics: the carry
// out of the low word (its signed overflow) goes into the high word, so every order gives the
// same bits. Each term stays below 2^GLRAST_FIXED_BITS: the high word changes only after ~2^23
// terms of one sign.
GLRAST_HD void add_wide(i64* cell, i64 q) {
    const i64 old = (i64)atomic_add_u64((u64*)cell, (u64)q);
    const i64 now = (i64)((u64)old + (u64)q);
    if (q > 0 && now < old) atomic_add_u64((u64*)cell + 1, 1ull);
    else if (q < 0 && now > old) atomic_add_u64((u64*)cell + 1, ~0ull);
}

GLRAST_HD void accumulate_deterministic(const Accumulator& acc, i64 index, float value) {
    if (value == 0.f) return;
    u32* peak = acc.peak + index;
    const u32 bits = magnitude_bits(value);
    if (acc.mode == GLRAST_ACC_PEAK) {
        atomic_max_u32(peak, bits);
        return;
    }
    const u32 top = *peak;
    if (top == GLRAST_PEAK_NAN) return;  // the entry is NaN whatever else it gets
    const int e = (int)(top >> 23 > 1 ? top >> 23 : 1) - 126;  // top < 2^e
    // value * 2^(FIXED_BITS - e), exact in double; the power of two built from its bits.
    const double scale = bits_double((i64)(1023 + GLRAST_FIXED_BITS - e) << 52);
    const float v = bits == 0x7F7FFFFFu ? (value > 0.f ? GLRAST_FLT_MAX : -GLRAST_FLT_MAX) : value;
    const double scaled = (double)v * scale;  // below 2^FIXED_BITS: + 0.5 is exact, and so is the rounding
    add_wide((i64*)acc.data + 2 * index, (i64)(scaled + (scaled < 0.0 ? -0.5 : 0.5)));
}

GLRAST_HD void accumulate(const Accumulator& acc, i64 index, float value) {
    if (acc.mode != GLRAST_ACC_FLOAT)
        accumulate_deterministic(acc, index, value);
    else if (acc.count == 1)
        atomic_add_f32((float*)acc.data + index, value);
    else {
        const int k = thread_slot();
        (k == 0 ? (float*)acc.data : acc.spare + (k - 1) * acc.size)[index] += value;
    }
}

// i / d for i >= 0, d > 0: none where i < d (a pixel of the first image), else in 32 bits where both
// fit, as they nearly always do for pixel indices. x86's 64-bit integer division takes ~40-90
// cycles, and the two a pixel's row and image took were most of raster_fwd's time on the CPU.
GLRAST_HD i64 index_div(i64 i, i64 d) {
    if (i < d) return 0;
    return ((u64)(i | d) >> 32) == 0 ? (i64)((u32)i / (u32)d) : i / d;
}

// Pixel i of a batch of height x width images.
struct PixelIndex {
    i64 image;
    int row, col;
};
GLRAST_HD PixelIndex pixel_index(i64 i, int height, int width) {
    i64 hw = (i64)height * width, image = index_div(i, hw), pix = i - image * hw;
    i64 row = index_div(pix, width);
    return {image, (int)row, (int)(pix - row * width)};
}

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

GLRAST_LAYOUT(Accumulator, data, spare, peak, size, count, mode)
GLRAST_CONSTANTS(accumulation, GLRAST_ACC_FLOAT, GLRAST_ACC_PEAK, GLRAST_ACC_FIXED, GLRAST_FIXED_BITS, GLRAST_PEAK_NAN)

// A deterministic accumulator's sums as float32 (kernels.collect, one thread an entry):
// sum * 2^(e - GLRAST_FIXED_BITS) for the entry's peak < 2^e, saturated at the largest float; NaN
// where a term was NaN.
struct FixedParams {
    const i64* sums;  // [size][2]
    const u32* peak;  // [size]
    float* out;       // [size]
};
GLRAST_LAYOUT(FixedParams, sums, peak, out)

GLRAST_KERNEL(fixed_to_float, FixedParams) {
    const u32 top = p.peak[i];
    if (top == GLRAST_PEAK_NAN) {
        p.out[i] = bits_float(0x7FC00000);
        return;
    }
    const int e = (int)(top >> 23 > 1 ? top >> 23 : 1) - 126;
    const double total = (double)p.sums[2 * i + 1] * 18446744073709551616.0 + (double)p.sums[2 * i];  // high 2^64 + low
    p.out[i] = saturate_f32(total * bits_double((i64)(1023 + e - GLRAST_FIXED_BITS) << 52));
}

// A kernel that scatters through an Accumulator (calls accumulate, directly or not) is declared
// with GLRAST_SCATTER_KERNEL instead of GLRAST_KERNEL: it exports glrast_scatters_NAME, by which
// the runtime knows to launch it twice in deterministic mode (the PEAK and FIXED passes).
#define GLRAST_SCATTER_KERNEL(NAME, PARAMS)                                                 \
    GLRAST_EXPORTED int glrast_scatters_##NAME = 1;                                         \
    GLRAST_KERNEL(NAME, PARAMS)

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

// The visible triangles of a fine mesh lie anywhere in tri, so a pixel kernel's load of its row of
// tri misses the cache: on the CPU, pixel i prefetches the row of the triangle of pixel i + PIXEL_AHEAD
// (tri_of_ahead: its id, negative for none; the caller checks that pixel exists). 1.3M triangles at
// 512², raster_fwd on one thread: 20 -> 9 ms. Also loading that row to prefetch the corners it names
// made the kernel 2x slower: the load waited for the row.
#define GLRAST_PIXEL_AHEAD 32
GLRAST_HD void prefetch_tri_row(const int* tri, int tri_of_ahead, int num_tris) {
    if (tri_of_ahead >= 0 && tri_of_ahead < num_tris) prefetch(tri + 3 * (i64)tri_of_ahead);
}

// The same for a kernel that reads pixel i's triangle from rast ([pixels, 4], the id in channel 3).
GLRAST_HD void prefetch_rast_tri_row(const int* tri, int num_tris, const float* rast, i64 i, i64 pixels) {
    if (i + GLRAST_PIXEL_AHEAD < pixels)
        prefetch_tri_row(tri, decode_triangle_id(rast[4 * (i + GLRAST_PIXEL_AHEAD) + 3]), num_tris);
}
