/* The weight gradient of a depthwise convolution on channels-last tensors.
 *
 * out[(i*kw + j)*c + ch] += sum over n, oy, ox of
 *     g[((n*oh + oy)*ow + ox)*c + ch] * x[((n*h + y)*w + xx)*c + ch]
 * with y = oy*sh - top + i, xx = ox*sw - left + j; taps outside x are zero padding.
 *
 * Built by effnet.nn.native with the machine's C compiler (-O3 -march=native) the first time
 * it is needed, and loaded with ctypes. The channels are vectorised with GCC/Clang vector
 * extensions: 16 channels (two 8-lane vectors) per block, kw * 2 accumulators in registers,
 * one tap row at a time. Per image and tap the sum is in float32; across images in float64,
 * so the result does not depend on how the channels are split between threads.
 */
#include <stddef.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static const float ZEROS[16] = {0};

/* One block of 16 channels starting at c0, one tap row i, one image n, KW taps per row. */
#define ROW_KERNEL(KW)                                                                    \
    static void row_kw##KW(const float *x, const float *g, double *out, long h, long w,  \
                           long c, long oh, long ow, long sh, long sw, long top,          \
                           long left, long i, long n, long c0, long kw) {                 \
        v8 a0[KW], a1[KW];                                                                \
        for (int j = 0; j < KW; j++) { a0[j] = (v8){0}; a1[j] = (v8){0}; }                \
        for (long oy = 0; oy < oh; oy++) {                                                \
            long y = oy * sh - top + i;                                                   \
            if (y < 0 || y >= h) continue;                                                \
            const float *grow = g + ((n * oh + oy) * ow) * c + c0;                        \
            const float *xrow = x + ((n * h + y) * w) * c + c0;                           \
            for (long ox = 0; ox < ow; ox++) {                                            \
                v8 g0 = load8(grow + ox * c), g1 = load8(grow + ox * c + 8);               \
                long x0 = ox * sw - left;                                                 \
                for (int j = 0; j < KW; j++) {                                            \
                    long xx = x0 + j;                                                     \
                    const float *p = (xx >= 0 && xx < w) ? xrow + xx * c : ZEROS;         \
                    a0[j] += g0 * load8(p);                                               \
                    a1[j] += g1 * load8(p + 8);                                           \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
        for (int j = 0; j < KW; j++) {                                                    \
            double *o = out + (i * kw + j) * c + c0;                                      \
            for (int l = 0; l < 8; l++) { o[l] += a0[j][l]; o[8 + l] += a1[j][l]; }       \
        }                                                                                 \
    }

ROW_KERNEL(1)
ROW_KERNEL(2)
ROW_KERNEL(3)
ROW_KERNEL(4)
ROW_KERNEL(5)
ROW_KERNEL(6)
ROW_KERNEL(7)

typedef void (*row_fn)(const float *, const float *, double *, long, long, long, long, long,
                       long, long, long, long, long, long, long, long);

static const row_fn ROWS[8] = {0, row_kw1, row_kw2, row_kw3, row_kw4, row_kw5, row_kw6,
                               row_kw7};

/* Channels c0..c1-1 with a plain loop: blocks of fewer than 16 channels, kw > 7, float64. */
#define PLAIN(NAME, T)                                                                    \
    static void NAME(const T *x, const T *g, double *out, long n_img, long h, long w,     \
                     long c, long oh, long ow, long kh, long kw, long sh, long sw,        \
                     long top, long left, long c0, long c1) {                             \
        T acc[64];                                                                        \
        for (long n = 0; n < n_img; n++)                                                  \
            for (long i = 0; i < kh; i++)                                                 \
                for (long j = 0; j < kw; j++)                                             \
                    for (long cs = c0; cs < c1; cs += 64) {                               \
                        long nb = c1 - cs < 64 ? c1 - cs : 64;                            \
                        for (long l = 0; l < nb; l++) acc[l] = 0;                         \
                        for (long oy = 0; oy < oh; oy++) {                                \
                            long y = oy * sh - top + i;                                   \
                            if (y < 0 || y >= h) continue;                                \
                            for (long ox = 0; ox < ow; ox++) {                            \
                                long xx = ox * sw - left + j;                             \
                                if (xx < 0 || xx >= w) continue;                          \
                                const T *gp = g + ((n * oh + oy) * ow + ox) * c + cs;     \
                                const T *xp = x + ((n * h + y) * w + xx) * c + cs;        \
                                for (long l = 0; l < nb; l++) acc[l] += gp[l] * xp[l];    \
                            }                                                             \
                        }                                                                 \
                        double *o = out + (i * kw + j) * c + cs;                          \
                        for (long l = 0; l < nb; l++) o[l] += acc[l];                     \
                    }                                                                     \
    }

PLAIN(plain_f32, float)
PLAIN(plain_f64, double)

/* out (kh, kw, c) float64, zeroed by the caller; channels c0..c1-1 are added to. */
void dw_weight_grad_f32(const float *x, const float *g, double *out, long n_img, long h,
                        long w, long c, long oh, long ow, long kh, long kw, long sh,
                        long sw, long top, long left, long c0, long c1) {
    long vec_end = c0;
    if (kw <= 7) {
        vec_end = c0 + (c1 - c0) / 16 * 16;
        for (long cs = c0; cs < vec_end; cs += 16)
            for (long n = 0; n < n_img; n++)
                for (long i = 0; i < kh; i++)
                    ROWS[kw](x, g, out, h, w, c, oh, ow, sh, sw, top, left, i, n, cs, kw);
    }
    if (vec_end < c1)
        plain_f32(x, g, out, n_img, h, w, c, oh, ow, kh, kw, sh, sw, top, left, vec_end, c1);
}

void dw_weight_grad_f64(const double *x, const double *g, double *out, long n_img, long h,
                        long w, long c, long oh, long ow, long kh, long kw, long sh,
                        long sw, long top, long left, long c0, long c1) {
    plain_f64(x, g, out, n_img, h, w, c, oh, ow, kh, kw, sh, sw, top, left, c0, c1);
}
