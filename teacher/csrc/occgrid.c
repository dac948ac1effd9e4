/* Occupancy-grid ray marching on the CPU: nerfacc's traverse_grids kernel (one level,
 * constant steps) replayed per ray in float32, as teacher/sampler.py documents it.
 *
 *   t_0 = near; t_{k+1} = fl32(t_k + dt); mid_k = fl32(t_k + dt / 2)
 *   emit [t_k, t_{k+1}] iff lo <= mid_k < hi and the cell
 *   trunc(clamp(fl32(fl32(gd * mid_k) + g0), 0, res - 1)) is occupied.
 *
 * float32 arithmetic here is the kernel's (build with -ffp-contract=off: a fused
 * multiply-add would round differently). Two passes over the rays: count the samples
 * of each ray, then (after the caller's prefix sum) write them in ray order.
 * [lo_box, hi_box) bounds the steps whose cell can be occupied (the occupied cells'
 * bounding box): steps outside it are marched but not tested.
 */
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    const float *g0, *gd;                        /* (R, 3) grid-unit origins and directions */
    const float *near, *lo, *hi, *lo_box, *hi_box; /* (R,) */
    const uint8_t *occ;                          /* (X, Y, Z) occupancy, x-major */
    int64_t rx, ry, rz;
    float dt, half;
} March;

static inline int occupied(const March *m, int64_t r, float mid) {
    const float *o = m->g0 + 3 * r, *d = m->gd + 3 * r;
    float cx = d[0] * mid + o[0], cy = d[1] * mid + o[1], cz = d[2] * mid + o[2];
    const float tx = (float)(m->rx - 1), ty = (float)(m->ry - 1), tz = (float)(m->rz - 1);
    cx = cx > 0 ? (cx < tx ? cx : tx) : 0;
    cy = cy > 0 ? (cy < ty ? cy : ty) : 0;
    cz = cz > 0 ? (cz < tz ? cz : tz) : 0;
    const int64_t i = (int64_t)cx, j = (int64_t)cy, k = (int64_t)cz;
    return m->occ[(i * m->ry + j) * m->rz + k];
}

/* March ray r; count its samples, and write them at ray_out/t_out when those are not NULL. */
static inline int64_t march_ray(const March *m, int64_t r, int64_t *ray_out, float *t_out) {
    const float lo = m->lo[r], hi = m->hi[r], lo_box = m->lo_box[r], hi_box = m->hi_box[r];
    if (!(lo < hi) || !(lo_box < hi_box)) return 0;
    const float stop = hi < hi_box ? hi : hi_box;
    int64_t n = 0;
    const float dt = m->dt;
    for (float t = m->near[r];; t = t + dt) {
        const float mid = t + m->half;
        if (!(mid < stop)) break;
        if (mid < lo || mid < lo_box || !occupied(m, r, mid)) continue;
        if (t_out) {
            ray_out[n] = r;
            t_out[n] = t;
        }
        ++n;
    }
    return n;
}

void og_count(const float *g0, const float *gd, const float *near, const float *lo, const float *hi,
              const float *lo_box, const float *hi_box, int64_t n_rays, const uint8_t *occ, int64_t rx,
              int64_t ry, int64_t rz, float dt, float half, int64_t *counts) {
    const March m = {g0, gd, near, lo, hi, lo_box, hi_box, occ, rx, ry, rz, dt, half};
#pragma omp parallel for schedule(dynamic, 256) if (n_rays >= 1024)
    for (int64_t r = 0; r < n_rays; ++r) counts[r] = march_ray(&m, r, 0, 0);
}

/* offsets: (R,) exclusive prefix sum of og_count's counts. */
void og_fill(const float *g0, const float *gd, const float *near, const float *lo, const float *hi,
             const float *lo_box, const float *hi_box, int64_t n_rays, const uint8_t *occ, int64_t rx,
             int64_t ry, int64_t rz, float dt, float half, const int64_t *offsets, int64_t *ray_indices,
             float *t_starts) {
    const March m = {g0, gd, near, lo, hi, lo_box, hi_box, occ, rx, ry, rz, dt, half};
#pragma omp parallel for schedule(dynamic, 256) if (n_rays >= 1024)
    for (int64_t r = 0; r < n_rays; ++r) march_ray(&m, r, ray_indices + offsets[r], t_starts + offsets[r]);
}

/* ---- several levels and cone steps: nerfacc's traverse_grids with n_grids > 1, cone_angle >= 0 ----
 *
 *   t_0 = near; dt_k = clamp(fl32(t_k * cone), step, 1e10); t_{k+1} = fl32(t_k + dt_k);
 *   mid_k = fl32(t_k + fl32(dt_k * 0.5))
 *   emit [t_k, t_{k+1}] iff lo <= mid_k < hi and, in the finest level whose box holds the point
 *   (the kernel's grid "in front"), the cell trunc(fl32(fl32(gd_l * mid_k) + g0_l)) is occupied.
 *
 * The levels are nerfacc's nested boxes (level l: the first box scaled 2^l about its centre);
 * [lo, hi) is the ray's part of the largest box and of [near, far]. g0, gd: (R, L, 3) each
 * ray's origin and direction in every level's grid units. */
typedef struct {
    const float *g0, *gd;       /* (R, L, 3) */
    const float *near, *lo, *hi; /* (R,) */
    const uint8_t *occ;         /* (L, X, Y, Z) occupancy, x-major */
    int64_t levels, rx, ry, rz;
    float step, cone;
} MarchLevels;

/* The occupancy of the finest level holding o + mid d; 0 when no level holds it. */
static inline int occupied_levels(const MarchLevels *m, int64_t r, float mid) {
    const float fx = (float)m->rx, fy = (float)m->ry, fz = (float)m->rz;
    for (int64_t l = 0; l < m->levels; ++l) {
        const float *o = m->g0 + 3 * (r * m->levels + l), *d = m->gd + 3 * (r * m->levels + l);
        const float cx = d[0] * mid + o[0], cy = d[1] * mid + o[1], cz = d[2] * mid + o[2];
        if (!(cx >= 0 && cx < fx && cy >= 0 && cy < fy && cz >= 0 && cz < fz)) continue;
        int64_t i = (int64_t)cx, j = (int64_t)cy, k = (int64_t)cz;
        i = i < m->rx ? i : m->rx - 1;
        j = j < m->ry ? j : m->ry - 1;
        k = k < m->rz ? k : m->rz - 1;
        return m->occ[((l * m->rx + i) * m->ry + j) * m->rz + k];
    }
    return 0;
}

static inline int64_t march_ray_levels(const MarchLevels *m, int64_t r, int64_t *ray_out, float *t0_out,
                                       float *t1_out) {
    const float lo = m->lo[r], hi = m->hi[r];
    if (!(lo < hi)) return 0;
    int64_t n = 0;
    float t = m->near[r];
    for (;;) {
        float dt = t * m->cone;
        dt = dt < m->step ? m->step : (dt > 1e10f ? 1e10f : dt);
        const float mid = t + dt * 0.5f;
        if (!(mid < hi)) break;
        const float next = t + dt;
        if (mid >= lo && occupied_levels(m, r, mid)) {
            if (t0_out) {
                ray_out[n] = r;
                t0_out[n] = t;
                t1_out[n] = next;
            }
            ++n;
        }
        t = next;
    }
    return n;
}

void og_count_levels(const float *g0, const float *gd, const float *near, const float *lo, const float *hi,
                     int64_t n_rays, const uint8_t *occ, int64_t levels, int64_t rx, int64_t ry, int64_t rz,
                     float step, float cone, int64_t *counts) {
    const MarchLevels m = {g0, gd, near, lo, hi, occ, levels, rx, ry, rz, step, cone};
#pragma omp parallel for schedule(dynamic, 256) if (n_rays >= 1024)
    for (int64_t r = 0; r < n_rays; ++r) counts[r] = march_ray_levels(&m, r, 0, 0, 0);
}

void og_fill_levels(const float *g0, const float *gd, const float *near, const float *lo, const float *hi,
                    int64_t n_rays, const uint8_t *occ, int64_t levels, int64_t rx, int64_t ry, int64_t rz,
                    float step, float cone, const int64_t *offsets, int64_t *ray_indices, float *t_starts,
                    float *t_ends) {
    const MarchLevels m = {g0, gd, near, lo, hi, occ, levels, rx, ry, rz, step, cone};
#pragma omp parallel for schedule(dynamic, 256) if (n_rays >= 1024)
    for (int64_t r = 0; r < n_rays; ++r)
        march_ray_levels(&m, r, ray_indices + offsets[r], t_starts + offsets[r], t_ends + offsets[r]);
}

int abi_version(void) { return 2; }
