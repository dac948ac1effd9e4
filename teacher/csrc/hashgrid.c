/* Multiresolution hash encoding on the CPU: fused forward gather and backward scatter.
 *
 * Plain C with no dependency beyond libc, so that it builds in about a second with
 * the system compiler (teacher/hashgrid_native.py compiles and loads it through
 * ctypes). It computes exactly what teacher/hashgrid.py's torch path computes:
 *
 *   level l: R = res[l]; u = clamp(x, 0, 1) * R; cell = min(floor(u), R - 1); frac = u - cell
 *   corner (dx, dy, dz): row = dense[l] ? i + j (R+1) + k (R+1)^2
 *                                       : (i ^ j * 2654435761 ^ k * 805459861) mod 2^32 & mask
 *   out[l, f] = sum over the 8 corners of w * table[(offset[l] + row) * F + f],
 *   w = wx * wy * wz (trilinear), corners in the order c = dx + 2 dy + 4 dz.
 *
 * Why C: the torch backward materialises (L, 8, F, N) index and value arrays and
 * then scatters them (16 L values of memory traffic per point); here each weight
 * is added where it is computed. Levels own disjoint rows of the table, so the
 * backward is split over threads by level without atomics; the forward is split
 * by points. Threads come from OpenMP: built with -fopenmp, the library binds to
 * the libgomp that torch has already loaded, so it shares torch's thread pool and
 * thread count (torch.set_num_threads) instead of competing with its spinning
 * workers.
 *
 * Loops run level-outer, point-inner: one level's rows (4 MB at T = 2^19, F = 2)
 * stay in the last-level cache while every point visits them (2.5x faster than
 * point-outer here, where each point walks the whole 48 MB table), and the inner
 * loop is branch-free so the compiler can vectorise the forward's gathers.
 *
 * A NaN coordinate gives NaN features, like the torch path; its gradient is dropped (the torch
 * path would add NaN into the table).
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>

#define PRIME_Y 2654435761u
#define MIN_POINTS_PER_THREAD 8192

#ifdef _OPENMP
#define THREAD_ID() omp_get_thread_num()
#define N_THREADS() omp_get_num_threads()
#else
#define THREAD_ID() 0
#define N_THREADS() 1
#endif
#define PRIME_Z 805459861u

#define DEFINE_KERNELS(T, SUFFIX, FLOOR)                                                                   \
    /* Rows and trilinear weights of the 8 corners of x's cell at one level; returns nonzero for NaN x. */ \
    static inline __attribute__((always_inline)) int corners_##SUFFIX(                                    \
        const T *p, int32_t R, int dense, uint32_t mask, int64_t rows[8], T w[8]) {                        \
        T x = p[0], y = p[1], z = p[2];                                                                    \
        const int bad = (x != x) | (y != y) | (z != z);                                                    \
        /* clamp to [0, 1]; written so that NaN becomes 0 and indexes in bounds */                         \
        x = x > 0 ? x : 0; x = x < 1 ? x : 1;                                                              \
        y = y > 0 ? y : 0; y = y < 1 ? y : 1;                                                              \
        z = z > 0 ? z : 0; z = z < 1 ? z : 1;                                                              \
        const T r = (T)R, top = (T)(R - 1);                                                                \
        const T ux = x * r, uy = y * r, uz = z * r;                                                        \
        T cx = FLOOR(ux), cy = FLOOR(uy), cz = FLOOR(uz);                                                  \
        cx = cx < top ? cx : top; /* x == 1 stays in the last cell */                                      \
        cy = cy < top ? cy : top;                                                                          \
        cz = cz < top ? cz : top;                                                                          \
        const T fx = ux - cx, fy = uy - cy, fz = uz - cz;                                                  \
        const T wx[2] = {1 - fx, fx}, wy[2] = {1 - fy, fy}, wz[2] = {1 - fz, fz};                          \
        const uint32_t i = (uint32_t)cx, j = (uint32_t)cy, k = (uint32_t)cz;                               \
        const int64_t s1 = (int64_t)R + 1, s2 = s1 * s1;                                                   \
        for (int c = 0; c < 8; ++c) {                                                                      \
            const uint32_t dx = c & 1, dy = (c >> 1) & 1, dz = c >> 2;                                     \
            const int64_t dense_row = (int64_t)(i + dx) + (int64_t)(j + dy) * s1 + (int64_t)(k + dz) * s2; \
            const int64_t hashed_row = (int64_t)(((i + dx) ^ ((j + dy) * PRIME_Y) ^ ((k + dz) * PRIME_Z)) & mask); \
            rows[c] = dense ? dense_row : hashed_row;                                                      \
            w[c] = wx[dx] * wy[dy] * wz[dz];                                                               \
        }                                                                                                  \
        return bad;                                                                                        \
    }                                                                                                      \
                                                                                                           \
    static inline __attribute__((always_inline)) void forward_level_##SUFFIX(                             \
        const T *x, int64_t n0, int64_t n1, int64_t N, const T *tab, T *o, const int F, int32_t R,         \
        int dense, uint32_t mask) {                                                                        \
        for (int64_t n = n0; n < n1; ++n) {                                                                \
            int64_t rows[8];                                                                               \
            T w[8];                                                                                        \
            const int bad = corners_##SUFFIX(x + 3 * n, R, dense, mask, rows, w);                          \
            for (int f = 0; f < F; ++f) {                                                                  \
                T acc = w[0] * tab[rows[0] * F + f];                                                       \
                for (int c = 1; c < 8; ++c) acc += w[c] * tab[rows[c] * F + f];                            \
                o[f * N + n] = bad ? (T)NAN : acc;                                                         \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
                                                                                                           \
    /* out: (L * F, N) row-major; x: (N, 3) row-major. Points are split over threads. */                  \
    void hg_forward_##SUFFIX(const T *x, int64_t N, const T *table, T *out, int L, int F,                  \
                             const int32_t *res, const int64_t *offset, const uint8_t *dense,              \
                             uint32_t mask) {                                                              \
        _Pragma("omp parallel if (N >= 2 * MIN_POINTS_PER_THREAD)")                                        \
        {                                                                                                  \
            const int64_t t = THREAD_ID(), nt = N_THREADS();                                               \
            const int64_t n0 = N * t / nt, n1 = N * (t + 1) / nt;                                          \
            for (int l = 0; l < L; ++l) {                                                                  \
                const T *tab = table + offset[l] * F;                                                      \
                T *o = out + (int64_t)l * F * N;                                                           \
                if (F == 2 && SIMD_F2 && mask < (1u << 30))                                              \
                    FORWARD_F2_SIMD(x, n0, n1, N, tab, o, res[l], dense[l], mask);                         \
                else if (F == 2) /* constant F: the feature loops unroll */                                \
                    forward_level_##SUFFIX(x, n0, n1, N, tab, o, 2, res[l], dense[l], mask);               \
                else                                                                                       \
                    forward_level_##SUFFIX(x, n0, n1, N, tab, o, F, res[l], dense[l], mask);               \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
                                                                                                           \
    static inline __attribute__((always_inline)) void backward_level_##SUFFIX(                            \
        const T *x, int64_t N, const T *g, T *gt, const int F, int32_t R, int dense, uint32_t mask) {      \
        for (int64_t n = 0; n < N; ++n) {                                                                  \
            int64_t rows[8];                                                                               \
            T w[8];                                                                                        \
            if (corners_##SUFFIX(x + 3 * n, R, dense, mask, rows, w)) continue;                            \
            for (int f = 0; f < F; ++f) {                                                                  \
                const T gf = g[f * N + n];                                                                 \
                for (int c = 0; c < 8; ++c) gt[rows[c] * F + f] += w[c] * gf;                              \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
                                                                                                           \
    /* grad_table[rows] += w * grad; grad: (L * F, N) row-major (points contiguous). Levels own disjoint \
       rows, so they are split over threads (round robin: coarse levels are cheaper) without atomics. */   \
    void hg_backward_##SUFFIX(const T *x, int64_t N, const T *grad, T *grad_table, int L, int F,           \
                              const int32_t *res, const int64_t *offset, const uint8_t *dense,             \
                              uint32_t mask) {                                                             \
        _Pragma("omp parallel if (N >= 2 * MIN_POINTS_PER_THREAD)")                                        \
        {                                                                                                  \
            const int t = THREAD_ID(), nt = N_THREADS();                                                   \
            for (int l = t; l < L; l += nt) {                                                              \
                const T *g = grad + (int64_t)l * F * N;                                                    \
                T *gt = grad_table + offset[l] * F;                                                        \
                if (F == 2)                                                                                \
                    backward_level_##SUFFIX(x, N, g, gt, 2, res[l], dense[l], mask);                       \
                else                                                                                       \
                    backward_level_##SUFFIX(x, N, g, gt, F, res[l], dense[l], mask);                       \
            }                                                                                              \
        }                                                                                                  \
    }


/* float32, F = 2: the forward's point loop written so that the compiler vectorises it
 * (omp simd: 16 points per AVX-512 register, the 8 corner reads as gathers), one loop
 * per level kind. Same operations in the same order as the scalar kernel. Rows are
 * int32: a level holds at most 2^30 rows here (checked by the caller). */
#define CORNER_F2(DX, DY, DZ)                                                                              \
    {                                                                                                      \
        const int32_t row = DENSE_ROW ? (int32_t)((i + DX) + (j + DY) * s1 + (k + DZ) * s2)                \
                                      : (int32_t)(((i + DX) ^ ((j + DY) * PRIME_Y) ^ ((k + DZ) * PRIME_Z)) & mask); \
        const float w = ((DX ? fx : 1 - fx) * (DY ? fy : 1 - fy)) * (DZ ? fz : 1 - fz);                    \
        a0 += w * tab[2 * row];                                                                            \
        a1 += w * tab[2 * row + 1];                                                                        \
    }

#define FORWARD_F2_LOOP                                                                                    \
    _Pragma("omp simd")                                                                                    \
    for (int64_t n = n0; n < n1; ++n) {                                                                    \
        float x = xs[3 * n], y = xs[3 * n + 1], z = xs[3 * n + 2];                                         \
        const int bad = (x != x) | (y != y) | (z != z);                                                    \
        x = x > 0 ? x : 0; x = x < 1 ? x : 1;                                                              \
        y = y > 0 ? y : 0; y = y < 1 ? y : 1;                                                              \
        z = z > 0 ? z : 0; z = z < 1 ? z : 1;                                                              \
        const float ux = x * r, uy = y * r, uz = z * r;                                                    \
        float cx = floorf(ux), cy = floorf(uy), cz = floorf(uz);                                           \
        cx = cx < top ? cx : top;                                                                          \
        cy = cy < top ? cy : top;                                                                          \
        cz = cz < top ? cz : top;                                                                          \
        const float fx = ux - cx, fy = uy - cy, fz = uz - cz;                                              \
        const uint32_t i = (uint32_t)(int32_t)cx, j = (uint32_t)(int32_t)cy, k = (uint32_t)(int32_t)cz;     \
        float a0 = 0, a1 = 0;                                                                              \
        CORNER_F2(0, 0, 0) CORNER_F2(1, 0, 0) CORNER_F2(0, 1, 0) CORNER_F2(1, 1, 0)                        \
        CORNER_F2(0, 0, 1) CORNER_F2(1, 0, 1) CORNER_F2(0, 1, 1) CORNER_F2(1, 1, 1)                        \
        o[n] = bad ? (float)NAN : a0;                                                                      \
        o[N + n] = bad ? (float)NAN : a1;                                                                  \
    }

static void forward_level_f2_simd(const float *xs, int64_t n0, int64_t n1, int64_t N, const float *tab, float *o,
                                  int32_t R, int dense, uint32_t mask) {
    const float r = (float)R, top = (float)(R - 1);
    const uint32_t s1 = (uint32_t)R + 1, s2 = s1 * s1;
    if (dense) {
#define DENSE_ROW 1
        FORWARD_F2_LOOP
#undef DENSE_ROW
    } else {
#define DENSE_ROW 0
        FORWARD_F2_LOOP
#undef DENSE_ROW
    }
}

#define SIMD_F2 1
#define FORWARD_F2_SIMD forward_level_f2_simd
DEFINE_KERNELS(float, f32, floorf)
#undef SIMD_F2
#undef FORWARD_F2_SIMD
#define SIMD_F2 0
#define FORWARD_F2_SIMD(...) ((void)0)
DEFINE_KERNELS(double, f64, floor)

int abi_version(void) { return 4; }
