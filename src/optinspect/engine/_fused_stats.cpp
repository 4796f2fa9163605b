// One-pass per-token partial statistics, called from engine/fused.py through ctypes.
//
// For every row (one token's F features) it writes the exact-form partials of
// engine/stats.py, PARTIALS order, as float64:
//   sum, m2, min, max, zeros, elements, finite, nan
// over the finite elements (NaN and +-Inf are masked, as the eager path does;
// zeros and elements count every element).
//
// m2 (the sum of squared deviations from the row's mean) is computed in two
// levels: each block of BLOCK elements is reduced twice while it sits in L1
// (its sum, then its squared deviations from its own mean: an exact two-pass
// variance, with no cancellation), and blocks are merged with Chan et al.'s
// pairwise update, whose terms are all non-negative. Main memory is read once,
// each step vectorises (plain Welford needs a division per element and a serial
// dependency), and the error stays that of a float64 two-pass computation.
//
// Plain C ABI, no Python API: the shared object is built by setup.py as an
// optional extension and loaded with ctypes.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int64_t BLOCK = 256;
// Below this many elements per thread, starting threads costs more than it saves.
constexpr int64_t MIN_ELEMENTS_PER_THREAD = 1 << 15;

enum Dtype : int { FLOAT32 = 0, FLOAT16 = 1, BFLOAT16 = 2 };

inline float bits_to_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline uint32_t float_to_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// IEEE half -> float, exact for every input (normals, subnormals, Inf, NaN);
// branch-free so that the conversion loop vectorises without F16C.
inline float half_to_float(uint16_t h) {
    const uint32_t shifted_exp = 0x7c00u << 13;
    uint32_t o = (uint32_t(h) & 0x7fffu) << 13;
    const uint32_t exp = shifted_exp & o;
    o += uint32_t(127 - 15) << 23;
    const uint32_t inf_nan = o + (uint32_t(128 - 16) << 23);
    // A subnormal half: renormalise with an exact float subtraction.
    const uint32_t sub = float_to_bits(bits_to_float(o + (1u << 23)) - bits_to_float(113u << 23));
    o = exp == shifted_exp ? inf_nan : (exp == 0 ? sub : o);
    return bits_to_float(o | ((uint32_t(h) & 0x8000u) << 16));
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

struct Row {
    double sum = 0.0;
    double m2 = 0.0;
    float lo = std::numeric_limits<float>::infinity();
    float hi = -std::numeric_limits<float>::infinity();
    int64_t zeros = 0;
    int64_t finite = 0;
    int64_t nan = 0;

    // Chan et al.: m2 = m2_a + m2_b + delta^2 * n_a * n_b / n.
    void merge(double b_sum, double b_m2, int64_t b_n) {
        if (b_n == 0) return;
        if (finite == 0) {
            sum = b_sum;
            m2 = b_m2;
            finite = b_n;
            return;
        }
        const double na = double(finite), nb = double(b_n);
        const double delta = b_sum / nb - sum / na;
        m2 += b_m2 + delta * delta * (na * nb / (na + nb));
        sum += b_sum;
        finite += b_n;
    }
};

// One block known to be all finite is the common case: every loop vectorises.
// A non-finite element makes the block's float64 sum non-finite (float32
// values cannot overflow a float64 sum of BLOCK terms), and only then does the
// block take the masked loop.
//
// The sums run in LANES independent accumulators: with a single vector
// accumulator each add waits for the previous one (3-4 cycles), which made the
// loop latency-bound; independent chains keep the adders busy.
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) && \
    defined(__linux__)
// Wider vectors where the CPU has them, chosen at load time; the default clone
// is the portable baseline, so the shared object runs on any x86-64.
#define OPTINSPECT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define OPTINSPECT_CLONES
#endif
constexpr int LANES = 16;

OPTINSPECT_CLONES
void reduce_block(const float* x, int64_t n, Row& row) {
    double s_lane[LANES] = {};
    float lo_lane[LANES], hi_lane[LANES];
    int32_t zero_lane[LANES] = {};
    for (int j = 0; j < LANES; ++j) {
        lo_lane[j] = std::numeric_limits<float>::infinity();
        hi_lane[j] = -std::numeric_limits<float>::infinity();
    }
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int j = 0; j < LANES; ++j) {
            const float v = x[i + j];
            s_lane[j] += double(v);
            lo_lane[j] = v < lo_lane[j] ? v : lo_lane[j];
            hi_lane[j] = v > hi_lane[j] ? v : hi_lane[j];
            zero_lane[j] += v == 0.0f ? 1 : 0;
        }
    }
    for (int j = 0; i + j < n; ++j) {  // the tail, fewer than LANES elements
        const float v = x[i + j];
        s_lane[j] += double(v);
        lo_lane[j] = v < lo_lane[j] ? v : lo_lane[j];
        hi_lane[j] = v > hi_lane[j] ? v : hi_lane[j];
        zero_lane[j] += v == 0.0f ? 1 : 0;
    }
    double s = 0.0;
    float lo = std::numeric_limits<float>::infinity();
    float hi = -std::numeric_limits<float>::infinity();
    int64_t zeros = 0;
    for (int j = 0; j < LANES; ++j) {
        s += s_lane[j];
        lo = lo_lane[j] < lo ? lo_lane[j] : lo;
        hi = hi_lane[j] > hi ? hi_lane[j] : hi;
        zeros += zero_lane[j];
    }
    row.zeros += zeros;
    if (std::isfinite(s)) {
        const double mean = s / double(n);
        double q_lane[LANES] = {};
        i = 0;
        for (; i + LANES <= n; i += LANES) {
            for (int j = 0; j < LANES; ++j) {
                const double d = double(x[i + j]) - mean;
                q_lane[j] += d * d;
            }
        }
        for (int j = 0; i + j < n; ++j) {
            const double d = double(x[i + j]) - mean;
            q_lane[j] += d * d;
        }
        double q = 0.0;
        for (int j = 0; j < LANES; ++j) q += q_lane[j];
        row.lo = lo < row.lo ? lo : row.lo;
        row.hi = hi > row.hi ? hi : row.hi;
        row.merge(s, q, n);
        return;
    }
    // Masked: NaN and +-Inf take no part in sum, m2, min or max.
    s = 0.0;
    lo = std::numeric_limits<float>::infinity();
    hi = -std::numeric_limits<float>::infinity();
    int64_t finite = 0, nan = 0;
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        if (std::isfinite(v)) {
            s += double(v);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            ++finite;
        } else if (std::isnan(v)) {
            ++nan;
        }
    }
    double q = 0.0;
    if (finite > 0) {
        const double mean = s / double(finite);
        for (int64_t i = 0; i < n; ++i) {
            const float v = x[i];
            if (std::isfinite(v)) {
                const double d = double(v) - mean;
                q += d * d;
            }
        }
    }
    row.nan += nan;
    row.lo = lo < row.lo ? lo : row.lo;
    row.hi = hi > row.hi ? hi : row.hi;
    row.merge(s, q, finite);
}

template <typename Load>
inline void reduce_row(const void* data, int64_t features, Load load, double* out) {
    Row row;
    float buffer[BLOCK];
    for (int64_t start = 0; start < features; start += BLOCK) {
        const int64_t n = features - start < BLOCK ? features - start : BLOCK;
        const float* block = load(data, start, n, buffer);
        reduce_block(block, n, row);
    }
    out[0] = row.sum;
    out[1] = row.m2;
    out[2] = double(row.lo);
    out[3] = double(row.hi);
    out[4] = double(row.zeros);
    out[5] = double(features);
    out[6] = double(row.finite);
    out[7] = double(row.nan);
}

// float32 is read in place; half types are widened a block at a time into a
// stack buffer that stays in L1.
inline const float* load_f32(const void* data, int64_t start, int64_t, float*) {
    return static_cast<const float*>(data) + start;
}

inline const float* load_f16(const void* data, int64_t start, int64_t n, float* buffer) {
    const uint16_t* h = static_cast<const uint16_t*>(data) + start;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) buffer[i] = half_to_float(h[i]);
    return buffer;
}

inline const float* load_bf16(const void* data, int64_t start, int64_t n, float* buffer) {
    const uint16_t* h = static_cast<const uint16_t*>(data) + start;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) buffer[i] = bf16_to_float(h[i]);
    return buffer;
}

template <typename Load>
void reduce_rows(const char* base, int64_t item, int64_t tokens, int64_t rows, int64_t features,
                 int64_t stride_b, int64_t stride_t, Load load, double* out, int threads) {
    auto one = [&](int64_t r) {
        const int64_t b = r / tokens, t = r % tokens;
        const char* row = base + (b * stride_b + t * stride_t) * item;
        reduce_row(row, features, load, out + r * 8);
    };
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t r = 0; r < rows; ++r) one(r);
        return;
    }
#else
    (void)threads;
#endif
    for (int64_t r = 0; r < rows; ++r) one(r);
}

}  // namespace

extern "C" {

// Bumped whenever a signature or an output layout changes; fused.py checks it.
int optinspect_fused_abi(void) { return 2; }

// 1 when the library was built with OpenMP (rows are then split over threads).
int optinspect_fused_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

// Partials of a [batch, tokens, features] tensor whose last dimension is
// contiguous; strides are in elements. out: [batch * tokens, 8] float64.
// threads <= 1 runs on the calling thread. Returns 0, or -1 for an unknown dtype.
int optinspect_token_partials(const void* data, int dtype, int64_t batch, int64_t tokens,
                              int64_t features, int64_t stride_b, int64_t stride_t, double* out,
                              int threads) {
    const int64_t rows = batch * tokens;
    if (rows <= 0) return 0;
    const int64_t per_thread = MIN_ELEMENTS_PER_THREAD;
    const int64_t useful = (rows * features) / per_thread;
    if (threads > useful) threads = int(useful);
    if (threads > rows) threads = int(rows);
    const char* base = static_cast<const char*>(data);
    switch (dtype) {
        case FLOAT32:
            reduce_rows(base, 4, tokens, rows, features, stride_b, stride_t, load_f32, out, threads);
            return 0;
        case FLOAT16:
            reduce_rows(base, 2, tokens, rows, features, stride_b, stride_t, load_f16, out, threads);
            return 0;
        case BFLOAT16:
            reduce_rows(base, 2, tokens, rows, features, stride_b, stride_t, load_bf16, out,
                        threads);
            return 0;
        default:
            return -1;
    }
}

// Statistics of groups of per-token partials, as stats.combine_partials computes
// them in torch: partials [groups, batch, tokens, 8] float64 (contiguous) are
// pooled over tokens for each (group, sentence), the tokens where valid
// [batch, tokens] (uint8; NULL for all) is 0 left out, then finalised into
// out [groups, batch, 9] float64 in STAT_NAMES order (mean, std, min, max,
// absmax, rms, zeros, nan, inf). Pooling is Chan et al.'s: the groups' own m2
// plus the spread of their means around the pooled mean. A trace pools every
// module's partials at once, and this replaces some forty small torch ops.
void optinspect_pool_finalize(const double* partials, int64_t groups, int64_t batch,
                              int64_t tokens, const uint8_t* valid, double* out) {
    const double inf = std::numeric_limits<double>::infinity();
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (int64_t g = 0; g < groups; ++g) {
        for (int64_t b = 0; b < batch; ++b) {
            const double* p = partials + (g * batch + b) * tokens * 8;
            const uint8_t* keep = valid ? valid + b * tokens : nullptr;
            double total = 0.0, zeros = 0.0, elements = 0.0, finite = 0.0, nans = 0.0;
            double lo = inf, hi = -inf, m2 = 0.0;
            for (int64_t t = 0; t < tokens; ++t) {
                if (keep && !keep[t]) continue;
                const double* r = p + t * 8;
                total += r[0];
                m2 += r[1];
                lo = r[2] < lo ? r[2] : lo;
                hi = r[3] > hi ? r[3] : hi;
                zeros += r[4];
                elements += r[5];
                finite += r[6];
                nans += r[7];
            }
            const double pooled_mean = total / (finite > 1.0 ? finite : 1.0);
            for (int64_t t = 0; t < tokens; ++t) {
                if (keep && !keep[t]) continue;
                const double* r = p + t * 8;
                if (r[6] > 0.0) {
                    const double d = r[0] / r[6] - pooled_mean;
                    m2 += r[6] * d * d;
                }
            }
            double* o = out + (g * batch + b) * 9;
            const double mean = total / finite;  // NaN when nothing is finite, as in torch
            const double variance = m2 / finite;
            const bool none_finite = finite == 0.0;
            if (none_finite) lo = hi = nan;
            const double a = std::fabs(lo), c = std::fabs(hi);
            o[0] = mean;
            o[1] = std::sqrt(variance);
            o[2] = lo;
            o[3] = hi;
            o[4] = none_finite ? nan : (a > c ? a : c);
            o[5] = std::sqrt(variance + mean * mean);
            o[6] = zeros / elements;
            o[7] = nans;
            o[8] = elements - finite - nans;
        }
    }
}

}  // extern "C"
