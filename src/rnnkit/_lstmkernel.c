/*
 * A one-layer LSTM over padded time-major input for small layers on x86-64 CPUs with AVX2 and
 * FMA: forward and backward through time, each in one call (rnnkit.lstm_kernel wraps them as a
 * torch autograd Function).
 *
 * The equations are torch.nn.LSTM's, gates in its order (i, f, g, o):
 *   a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
 *   i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
 *   c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
 * At small sizes a step of oneDNN's kernel costs more in overhead than in arithmetic; here a
 * step is one register-blocked product with W_hh and one pass of vectorised activations.
 * exp follows Cephes' expf (a degree-5 polynomial after reduction by ln 2, relative error
 * about 2e-7); sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) = 2 / (1 + exp(-2x)) - 1.
 *
 * The arrays are float32, contiguous, row-major; every pointer is passed as an address by the
 * Python wrapper, which checks the shapes, dtypes and layout before calling; the GIL is released
 * while they run. available() says whether this CPU runs the kernel (AVX2 and FMA); the wrapper
 * calls nothing otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_KERNEL 1
#define AVX2 __attribute__((target("avx2,fma")))
#else
#define HAVE_KERNEL 0
#endif

#if HAVE_KERNEL

/* C[m, n] += sum_k A[m, k] W[k, n] for m < M, n < N, k < K. A's element (m, k) is at
 * A[m * sam + k * sak]; W and C are row-major with N columns. Blocks of 4 rows by 16 columns
 * stay in registers over k; then the last rows (M % 4) one at a time and the last columns
 * (N % 16) 8 at a time. */
AVX2 static void gemm_block(long M, long N, long K, const float *A, long sam, long sak,
                            const float *W, float *C) {
    const long N16 = N - N % 16;
    long m = 0;
    for (; m + 4 <= M; m += 4) {
        const float *a = A + m * sam;
        for (long n0 = 0; n0 < N16; n0 += 16) {
            float *c = C + m * N + n0;
            __m256 c00 = _mm256_loadu_ps(c), c01 = _mm256_loadu_ps(c + 8);
            __m256 c10 = _mm256_loadu_ps(c + N), c11 = _mm256_loadu_ps(c + N + 8);
            __m256 c20 = _mm256_loadu_ps(c + 2 * N), c21 = _mm256_loadu_ps(c + 2 * N + 8);
            __m256 c30 = _mm256_loadu_ps(c + 3 * N), c31 = _mm256_loadu_ps(c + 3 * N + 8);
            for (long k = 0; k < K; k++) {
                const float *w = W + k * N + n0;
                const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
                const float *ak = a + k * sak;
                __m256 x = _mm256_broadcast_ss(ak);
                c00 = _mm256_fmadd_ps(x, w0, c00);
                c01 = _mm256_fmadd_ps(x, w1, c01);
                x = _mm256_broadcast_ss(ak + sam);
                c10 = _mm256_fmadd_ps(x, w0, c10);
                c11 = _mm256_fmadd_ps(x, w1, c11);
                x = _mm256_broadcast_ss(ak + 2 * sam);
                c20 = _mm256_fmadd_ps(x, w0, c20);
                c21 = _mm256_fmadd_ps(x, w1, c21);
                x = _mm256_broadcast_ss(ak + 3 * sam);
                c30 = _mm256_fmadd_ps(x, w0, c30);
                c31 = _mm256_fmadd_ps(x, w1, c31);
            }
            _mm256_storeu_ps(c, c00);
            _mm256_storeu_ps(c + 8, c01);
            _mm256_storeu_ps(c + N, c10);
            _mm256_storeu_ps(c + N + 8, c11);
            _mm256_storeu_ps(c + 2 * N, c20);
            _mm256_storeu_ps(c + 2 * N + 8, c21);
            _mm256_storeu_ps(c + 3 * N, c30);
            _mm256_storeu_ps(c + 3 * N + 8, c31);
        }
    }
    for (; m < M; m++) {
        const float *a = A + m * sam;
        for (long n0 = 0; n0 < N16; n0 += 16) {
            float *c = C + m * N + n0;
            __m256 c0 = _mm256_loadu_ps(c), c1 = _mm256_loadu_ps(c + 8);
            for (long k = 0; k < K; k++) {
                const __m256 x = _mm256_broadcast_ss(a + k * sak);
                c0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(W + k * N + n0), c0);
                c1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(W + k * N + n0 + 8), c1);
            }
            _mm256_storeu_ps(c, c0);
            _mm256_storeu_ps(c + 8, c1);
        }
    }
    if (N16 < N) { /* the last columns, 8 at a time under a mask */
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (long n0 = N16; n0 < N; n0 += 8) {
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(N - n0)), lane);
            for (m = 0; m + 4 <= M; m += 4) {
                const float *a = A + m * sam;
                float *c = C + m * N + n0;
                __m256 c0 = _mm256_maskload_ps(c, mask), c1 = _mm256_maskload_ps(c + N, mask);
                __m256 c2 = _mm256_maskload_ps(c + 2 * N, mask);
                __m256 c3 = _mm256_maskload_ps(c + 3 * N, mask);
                for (long k = 0; k < K; k++) {
                    const __m256 w = _mm256_maskload_ps(W + k * N + n0, mask);
                    const float *ak = a + k * sak;
                    c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak), w, c0);
                    c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + sam), w, c1);
                    c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 2 * sam), w, c2);
                    c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 3 * sam), w, c3);
                }
                _mm256_maskstore_ps(c, mask, c0);
                _mm256_maskstore_ps(c + N, mask, c1);
                _mm256_maskstore_ps(c + 2 * N, mask, c2);
                _mm256_maskstore_ps(c + 3 * N, mask, c3);
            }
            for (; m < M; m++) {
                const float *a = A + m * sam;
                float *c = C + m * N + n0;
                __m256 acc = _mm256_maskload_ps(c, mask);
                for (long k = 0; k < K; k++)
                    acc = _mm256_fmadd_ps(_mm256_broadcast_ss(a + k * sak),
                                          _mm256_maskload_ps(W + k * N + n0, mask), acc);
                _mm256_maskstore_ps(c, mask, acc);
            }
        }
    }
}

/* gemm_block over K in chunks of KC, so that a chunk of W (KC rows) stays in cache while
 * every block of C goes over it. */
#define KC 256
AVX2 static void gemm(long M, long N, long K, const float *A, long sam, long sak,
                      const float *W, float *C) {
    for (long k0 = 0; k0 < K; k0 += KC)
        gemm_block(M, N, K - k0 < KC ? K - k0 : KC, A + k0 * sak, sam, sak, W + k0 * N, C);
}

AVX2 static inline __m256 exp8(__m256 x) {
    /* max and min return their second operand where either is NaN: a NaN goes through */
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

AVX2 static inline __m256 sigmoid8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

AVX2 static inline __m256 tanh8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = exp8(_mm256_mul_ps(x, _mm256_set1_ps(-2.0f)));
    return _mm256_sub_ps(_mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(one, e)), one);
}

/* w_t[k, n] = w[n, k] for a row-major w of R rows and S columns. */
static void transpose(long R, long S, const float *w, float *w_t) {
    for (long r = 0; r < R; r++)
        for (long s = 0; s < S; s++) w_t[s * R + r] = w[r * S + s];
}

/* Forward. x [T, B, I]; w_ih [4H, I]; w_hh [4H, H]; b_ih, b_hh [4H] (NULL: no bias);
 * h0, c0 [B, H]. Writes gates [T, B, 4H] (the activations i, f, g, o, which the backward
 * reads), hs [T + 1, B, H] (h0, then h_1 .. h_T) and cs [T, B, H]. */
AVX2 static int forward(long T, long B, long I, long H, const float *x, const float *w_ih,
                        const float *w_hh, const float *b_ih, const float *b_hh,
                        const float *h0, const float *c0, float *gates, float *hs, float *cs) {
    const long G = 4 * H;
    float *w_ih_t = malloc(sizeof(float) * (size_t)(I * G + H * G));
    if (w_ih_t == NULL) return -1;
    float *w_hh_t = w_ih_t + I * G;
    transpose(G, I, w_ih, w_ih_t);
    transpose(G, H, w_hh, w_hh_t);
    for (long r = 0; r < T * B; r++) {
        float *g = gates + r * G;
        for (long n = 0; n < G; n++) g[n] = b_ih ? b_ih[n] + b_hh[n] : 0.0f;
    }
    gemm(T * B, G, I, x, I, 1, w_ih_t, gates);
    memcpy(hs, h0, sizeof(float) * (size_t)(B * H));
    for (long t = 0; t < T; t++) {
        const float *hp = hs + t * B * H, *cp = t ? cs + (t - 1) * B * H : c0;
        float *h = hs + (t + 1) * B * H, *c = cs + t * B * H;
        gemm(B, G, H, hp, H, 1, w_hh_t, gates + t * B * G);
        for (long b = 0; b < B; b++) {
            float *g = gates + (t * B + b) * G;
            for (long j = 0; j < H; j += 8) {
                const __m256 i = sigmoid8(_mm256_loadu_ps(g + j));
                const __m256 f = sigmoid8(_mm256_loadu_ps(g + H + j));
                const __m256 gg = tanh8(_mm256_loadu_ps(g + 2 * H + j));
                const __m256 o = sigmoid8(_mm256_loadu_ps(g + 3 * H + j));
                _mm256_storeu_ps(g + j, i);
                _mm256_storeu_ps(g + H + j, f);
                _mm256_storeu_ps(g + 2 * H + j, gg);
                _mm256_storeu_ps(g + 3 * H + j, o);
                const __m256 cn =
                    _mm256_fmadd_ps(f, _mm256_loadu_ps(cp + b * H + j), _mm256_mul_ps(i, gg));
                _mm256_storeu_ps(c + b * H + j, cn);
                _mm256_storeu_ps(h + b * H + j, _mm256_mul_ps(o, tanh8(cn)));
            }
        }
    }
    free(w_ih_t);
    return 0;
}

/* Backward of forward(). dhs [T, B, H], dh_T, dc_T [B, H]: the gradients of the outputs,
 * of the final h and of the final c (NULL: zero). Writes dx [T, B, I] (NULL: not wanted),
 * dw_ih [4H, I], dw_hh [4H, H], db [4H] (the gradient of b_ih and of b_hh; NULL: no bias)
 * and dh0, dc0 [B, H]. */
AVX2 static int backward(long T, long B, long I, long H, const float *x, const float *w_ih,
                         const float *w_hh, const float *c0, const float *gates,
                         const float *hs, const float *cs, const float *dhs, const float *dh_T,
                         const float *dc_T, float *dx, float *dw_ih, float *dw_hh, float *db,
                         float *dh0, float *dc0) {
    const long G = 4 * H;
    float *dg = malloc(sizeof(float) * (size_t)(T * B * G + I * G + H * G));
    if (dg == NULL) return -1;
    float *dw_ih_t = dg + T * B * G, *dw_hh_t = dw_ih_t + I * G;
    const __m256 one = _mm256_set1_ps(1.0f);
    float *dh = dh0, *dc = dc0;
    if (dh_T) memcpy(dh, dh_T, sizeof(float) * (size_t)(B * H));
    else memset(dh, 0, sizeof(float) * (size_t)(B * H));
    if (dc_T) memcpy(dc, dc_T, sizeof(float) * (size_t)(B * H));
    else memset(dc, 0, sizeof(float) * (size_t)(B * H));
    for (long t = T - 1; t >= 0; t--) {
        const float *cp = t ? cs + (t - 1) * B * H : c0, *c = cs + t * B * H;
        for (long b = 0; b < B; b++) {
            const float *g = gates + (t * B + b) * G;
            float *d = dg + (t * B + b) * G, *dhb = dh + b * H, *dcb = dc + b * H;
            for (long j = 0; j < H; j += 8) {
                const __m256 tc = tanh8(_mm256_loadu_ps(c + b * H + j));
                const __m256 i = _mm256_loadu_ps(g + j), f = _mm256_loadu_ps(g + H + j);
                const __m256 gg = _mm256_loadu_ps(g + 2 * H + j);
                const __m256 o = _mm256_loadu_ps(g + 3 * H + j);
                __m256 dht = _mm256_loadu_ps(dhb + j);
                if (dhs) dht = _mm256_add_ps(dht, _mm256_loadu_ps(dhs + (t * B + b) * H + j));
                const __m256 dct = _mm256_fmadd_ps(_mm256_mul_ps(dht, o),
                                                   _mm256_fnmadd_ps(tc, tc, one),
                                                   _mm256_loadu_ps(dcb + j));
                _mm256_storeu_ps(d + j, _mm256_mul_ps(_mm256_mul_ps(dct, gg),
                                                      _mm256_fnmadd_ps(i, i, i)));
                _mm256_storeu_ps(d + H + j,
                                 _mm256_mul_ps(_mm256_mul_ps(dct, _mm256_loadu_ps(cp + b * H + j)),
                                               _mm256_fnmadd_ps(f, f, f)));
                _mm256_storeu_ps(d + 2 * H + j,
                                 _mm256_mul_ps(_mm256_mul_ps(dct, i), _mm256_fnmadd_ps(gg, gg, one)));
                _mm256_storeu_ps(d + 3 * H + j, _mm256_mul_ps(_mm256_mul_ps(dht, tc),
                                                              _mm256_fnmadd_ps(o, o, o)));
                _mm256_storeu_ps(dcb + j, _mm256_mul_ps(dct, f));
                _mm256_storeu_ps(dhb + j, _mm256_setzero_ps());
            }
        }
        gemm(B, H, G, dg + t * B * G, G, 1, w_hh, dh); /* dh = dg_t W_hh */
    }
    if (dx) {
        memset(dx, 0, sizeof(float) * (size_t)(T * B * I));
        gemm(T * B, I, G, dg, G, 1, w_ih, dx);
    }
    memset(dw_ih_t, 0, sizeof(float) * (size_t)(I * G + H * G));
    gemm(I, G, T * B, x, 1, I, dg, dw_ih_t);      /* dw_ih^T = x^T dg */
    gemm(H, G, T * B, hs, 1, H, dg, dw_hh_t);     /* dw_hh^T = h_{t-1}^T dg */
    transpose(I, G, dw_ih_t, dw_ih);
    transpose(H, G, dw_hh_t, dw_hh);
    if (db) {
        memset(db, 0, sizeof(float) * (size_t)G);
        for (long r = 0; r < T * B; r++)
            for (long n = 0; n < G; n++) db[n] += dg[r * G + n];
    }
    free(dg);
    return 0;
}

static int runs_here(void) {
    static int answer = -1; /* asked once; a race only writes the same answer twice */
    if (answer < 0) {
        __builtin_cpu_init();
        answer = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return answer;
}

#endif /* HAVE_KERNEL */

#define PTR(p) ((float *)(uintptr_t)(p))

static PyObject *lstm_available(PyObject *self, PyObject *args) {
#if HAVE_KERNEL
    return PyBool_FromLong(runs_here());
#else
    Py_RETURN_FALSE;
#endif
}

/* Whether forward or backward (`name`) can run these sizes here; otherwise sets the error. */
static int can_run(const char *name, long T, long B, long I, long H) {
#if HAVE_KERNEL
    if (T >= 1 && B >= 1 && I >= 1 && H >= 8 && H % 8 == 0 && runs_here()) return 1;
    PyErr_Format(PyExc_ValueError,
                 "%s: expected T, B, I >= 1 and H a multiple of 8 on a CPU with AVX2 and FMA, "
                 "found T=%ld, B=%ld, I=%ld, H=%ld",
                 name, T, B, I, H);
#else
    (void)T, (void)B, (void)I, (void)H;
    PyErr_Format(PyExc_RuntimeError, "%s: this build has no LSTM kernel", name);
#endif
    return 0;
}

static PyObject *lstm_forward(PyObject *self, PyObject *args) {
    long T, B, I, H;
    unsigned long long p[10];
    if (!PyArg_ParseTuple(args, "llllKKKKKKKKKK", &T, &B, &I, &H, &p[0], &p[1], &p[2], &p[3],
                          &p[4], &p[5], &p[6], &p[7], &p[8], &p[9]))
        return NULL;
    if (!can_run("forward", T, B, I, H)) return NULL;
#if HAVE_KERNEL
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = forward(T, B, I, H, PTR(p[0]), PTR(p[1]), PTR(p[2]), PTR(p[3]), PTR(p[4]), PTR(p[5]),
                     PTR(p[6]), PTR(p[7]), PTR(p[8]), PTR(p[9]));
    Py_END_ALLOW_THREADS
    if (failed < 0) return PyErr_NoMemory();
#endif
    Py_RETURN_NONE;
}

static PyObject *lstm_backward(PyObject *self, PyObject *args) {
    long T, B, I, H;
    unsigned long long p[16];
    if (!PyArg_ParseTuple(args, "llllKKKKKKKKKKKKKKKK", &T, &B, &I, &H, &p[0], &p[1], &p[2],
                          &p[3], &p[4], &p[5], &p[6], &p[7], &p[8], &p[9], &p[10], &p[11], &p[12],
                          &p[13], &p[14], &p[15]))
        return NULL;
    if (!can_run("backward", T, B, I, H)) return NULL;
#if HAVE_KERNEL
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = backward(T, B, I, H, PTR(p[0]), PTR(p[1]), PTR(p[2]), PTR(p[3]), PTR(p[4]),
                      PTR(p[5]), PTR(p[6]), PTR(p[7]), PTR(p[8]), PTR(p[9]), PTR(p[10]),
                      PTR(p[11]), PTR(p[12]), PTR(p[13]), PTR(p[14]), PTR(p[15]));
    Py_END_ALLOW_THREADS
    if (failed < 0) return PyErr_NoMemory();
#endif
    Py_RETURN_NONE;
}

static PyMethodDef lstmkernel_methods[] = {
    {"available", lstm_available, METH_NOARGS,
     "available() -> bool\n\nWhether this CPU runs the kernel (x86-64 with AVX2 and FMA)."},
    {"forward", lstm_forward, METH_VARARGS,
     "forward(T, B, I, H, x, w_ih, w_hh, b_ih, b_hh, h0, c0, gates, hs, cs)\n\nAddresses of "
     "contiguous float32 arrays (b_ih, b_hh 0: no bias); see the file's comments."},
    {"backward", lstm_backward, METH_VARARGS,
     "backward(T, B, I, H, x, w_ih, w_hh, c0, gates, hs, cs, dhs, dh_T, dc_T, dx, dw_ih, "
     "dw_hh, db, dh0, dc0)\n\nAddresses as for forward (dhs, dh_T, dc_T, dx, db 0: none)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef lstmkernel_module = {
    PyModuleDef_HEAD_INIT, "_lstmkernel",
    "A one-layer LSTM for small layers on CPUs with AVX2 (see rnnkit.lstm_kernel).", -1,
    lstmkernel_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__lstmkernel(void) { return PyModule_Create(&lstmkernel_module); }
