/* Array steps of the DB post-processing (module _steps), each replacing NumPy code that reads
 * its input more than once or builds temporaries, with the same results bit for bit:
 *   threshold(map, thresh, dilate, out) -> finite: the bitmap and the NaN / inf check;
 *   ring_sums(points, starts, area, length): shapely's ring area and length (unclip distance);
 *   arc_lengths(points, starts, out): cv2.arcLength of closed contours (polygon mode);
 *   box_corners(rects, opencv5, out): cv2.boxPoints + the reference's corner order.
 * Float expressions are compiled without contraction (setup.py), so a * b + c rounds twice as in
 * the reference.
 */
#include "_common.h"

/* x86-64 Linux builds carry an AVX2 copy of the per-pixel loops too, picked at load time (GCC
 * and Clang function multi-versioning, which needs glibc's ifunc); elsewhere the compiler's
 * default vectorisation is used. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define PIXEL_LOOP __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef PIXEL_LOOP
#define PIXEL_LOOP
#endif

/* One row of the bitmap: raw[x] = row[x] > t (NaN: 0); returns 1 when a value is NaN or inf
 * (exponent bits all set), tested on the bits so that the loop stays integer. */
PIXEL_LOOP static int threshold_row(const float *restrict row, int64_t w, float t,
                                    uint8_t *restrict raw)
{
    uint32_t bad = 0, bits;
    int64_t x;
    for (x = 0; x < w; x++) {
        memcpy(&bits, &row[x], 4);  /* the float's bits, without breaking aliasing rules */
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    for (x = 0; x < w; x++)
        raw[x] = row[x] > t;
    return bad != 0;
}

/* out[x] = cur[x] | prev[x] | cur[x - 1] | prev[x - 1]: the 2x2 dilation of one row. */
PIXEL_LOOP static void dilate_row(const uint8_t *restrict cur, const uint8_t *restrict prev,
                                  int64_t w, uint8_t *restrict out)
{
    int64_t x;
    if (w > 0)
        out[0] = cur[0] | prev[0];
    for (x = 1; x < w; x++)
        out[x] = cur[x] | prev[x] | cur[x - 1] | prev[x - 1];
}

/* threshold(map, thresh, dilate, out) -> finite: out = map > thresh compared in float32 (as
 * NumPy compares a float32 array with a Python float), as 0 / 1, dilated by a 2x2 kernel
 * anchored at its centre when asked (a pixel is set when it or its left, upper or upper-left
 * neighbour is); returns False when the map holds NaN or inf. One pass over the map. */
static PyObject *threshold(PyObject *self, PyObject *args)
{
    PyObject *map_obj, *out_obj;
    Py_buffer map, out;
    double thresh;
    int dilate, bad = 0;
    int64_t h, w, y;
    uint8_t *prev = NULL, *cur = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OdpO:threshold", &map_obj, &thresh, &dilate, &out_obj))
        return NULL;
    if (PyObject_GetBuffer(map_obj, &map, PyBUF_STRIDED_RO | PyBUF_FORMAT) < 0)
        return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&map);
        return NULL;
    }
    if (!check(map.ndim == 2 && map.itemsize == 4 && map.format && strcmp(map.format, "f") == 0 &&
               map.strides[1] == 4, "map: expected a 2-D float32 array with contiguous rows") ||
        !check(out.itemsize == 1 && out.len == map.shape[0] * map.shape[1],
               "out: expected a uint8 array of the map's size"))
        goto fail;
    h = map.shape[0];
    w = map.shape[1];
    prev = (uint8_t *)calloc((size_t)w + 1, 1);
    cur = (uint8_t *)malloc((size_t)w + 1);
    if (!prev || !cur) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    for (y = 0; y < h; y++) {
        const float *row = (const float *)((const char *)map.buf + y * map.strides[0]);
        uint8_t *o = (uint8_t *)out.buf + y * w, *t;
        if (!dilate) {
            bad |= threshold_row(row, w, (float)thresh, o);
            continue;
        }
        bad |= threshold_row(row, w, (float)thresh, cur);
        dilate_row(cur, prev, w, o);
        t = prev;
        prev = cur;
        cur = t;
    }
    Py_END_ALLOW_THREADS
    free(prev);
    free(cur);
    PyBuffer_Release(&map);
    PyBuffer_Release(&out);
    return PyBool_FromLong(!bad);
fail:
    free(prev);
    free(cur);
    PyBuffer_Release(&map);
    PyBuffer_Release(&out);
    return NULL;
}

/* The buffers of a (points, starts, outputs...) call: points C-contiguous of `point_bytes` per
 * point, starts (n + 1,) int64 increasing within the points, each output (n,) float64. */
static int ragged_buffers(PyObject **objs, int nout, Py_buffer *views, Py_ssize_t point_bytes,
                          Py_ssize_t *n)
{
    int got, i;
    const int64_t *s;
    for (got = 0; got < 2 + nout; got++) {
        int flags = PyBUF_C_CONTIGUOUS | (got >= 2 ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[got], &views[got], flags) < 0)
            goto fail;
    }
    *n = views[1].len / 8 - 1;
    s = (const int64_t *)views[1].buf;
    if (!check(views[0].itemsize * 2 == point_bytes && views[0].len % point_bytes == 0,
               "points: wrong type") ||
        !check(views[1].itemsize == 8 && *n >= 0 && s[0] == 0 &&
               s[*n] <= views[0].len / point_bytes, "starts: wrong type or out of range"))
        goto fail;
    for (i = 0; i < nout; i++)
        if (!check(views[2 + i].itemsize == 8 && views[2 + i].len / 8 == *n, "out: wrong length"))
            goto fail;
    for (i = 0; i < *n; i++)
        if (!check(s[i + 1] >= s[i], "starts: not increasing"))
            goto fail;
    return 1;
fail:
    while (got-- > 0)
        PyBuffer_Release(&views[got]);
    return 0;
}

/* ring_sums(points, starts, area, length): per closed polygon (float64 (x, y) points) the sum
 * of (x_i - x_0) * (y_{i-1} - y_{i+1}) and of its edge lengths, each in vertex order: what GEOS
 * (shapely) computes for a ring's area (before |.| / 2) and length, bit for bit. */
static PyObject *ring_sums(PyObject *self, PyObject *args)
{
    PyObject *objs[4];
    Py_buffer views[4];
    Py_ssize_t n, i;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOO:ring_sums", &objs[0], &objs[1], &objs[2], &objs[3]) ||
        !ragged_buffers(objs, 2, views, 16, &n))
        return NULL;
    {
        const double *p = (const double *)views[0].buf;
        const int64_t *s = (const int64_t *)views[1].buf;
        double *area = (double *)views[2].buf, *length = (double *)views[3].buf;
        for (i = 0; i < n; i++) {
            const double *v = p + 2 * s[i];
            int64_t k = s[i + 1] - s[i], j;
            double a = 0.0, l = 0.0;
            for (j = 1; j < k; j++) {
                double y_next = j + 1 < k ? v[2 * (j + 1) + 1] : v[1];  /* point k is point 0 */
                a += (v[2 * j] - v[0]) * (v[2 * (j - 1) + 1] - y_next);
            }
            for (j = 0; j < k; j++) {
                const double *q = j + 1 < k ? v + 2 * (j + 1) : v;
                double dx = q[0] - v[2 * j], dy = q[1] - v[2 * j + 1];
                l += sqrt(dx * dx + dy * dy);
            }
            area[i] = a;
            length[i] = l;
        }
    }
    for (i = 0; i < 4; i++)
        PyBuffer_Release(&views[i]);
    Py_RETURN_NONE;
}

/* arc_lengths(points, starts, out): cv2.arcLength(contour, closed=True) of int32 contours: per
 * edge from the closing one on, sqrt of dx * dx + dy * dy in float32, summed in float64. */
static PyObject *arc_lengths(PyObject *self, PyObject *args)
{
    PyObject *objs[3];
    Py_buffer views[3];
    Py_ssize_t n, i;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO:arc_lengths", &objs[0], &objs[1], &objs[2]) ||
        !ragged_buffers(objs, 1, views, 8, &n))
        return NULL;
    {
        const int32_t *p = (const int32_t *)views[0].buf;
        const int64_t *s = (const int64_t *)views[1].buf;
        double *out = (double *)views[2].buf;
        for (i = 0; i < n; i++) {
            const int32_t *v = p + 2 * s[i];
            int64_t k = s[i + 1] - s[i], j;
            double sum = 0.0;
            float px, py;
            if (k == 0) {
                out[i] = 0.0;
                continue;
            }
            px = (float)v[2 * (k - 1)];
            py = (float)v[2 * (k - 1) + 1];
            for (j = 0; j < k; j++) {
                float x = (float)v[2 * j], y = (float)v[2 * j + 1], dx = x - px, dy = y - py;
                sum += (double)sqrtf(dx * dx + dy * dy);
                px = x;
                py = y;
            }
            out[i] = sum;
        }
    }
    for (i = 0; i < 3; i++)
        PyBuffer_Release(&views[i]);
    Py_RETURN_NONE;
}
/* One rectangle's corners as RotatedRect::points computes them in float32 (OpenCV 5: all four
 * from the centre; OpenCV 4: the last two mirrored through it), in the reference's order
 * (get_mini_boxes: by x, stable; of the two left-most the upper first ("upper": strictly
 * smaller y, else the second), then upper right, lower right, lower left). */
static void rect_corners(float cx, float cy, float w, float h, float angle, int opencv5,
                         float *out)
{
    static const float sx_h[4] = {-1, 1, 1, -1}, sx_w[4] = {-1, -1, 1, 1};
    static const float sy_h[4] = {1, -1, -1, 1}, sy_w[4] = {-1, -1, 1, 1};
    double radians = (double)angle * 3.141592653589793 / 180.0;
    float b = (float)cos(radians) * 0.5f, a = (float)sin(radians) * 0.5f, pt[4][2];
    float ah = a * h, bw = b * w, bh = b * h, aw = a * w;
    int order[4] = {0, 1, 2, 3}, i, j, pick[4];
    for (i = 0; i < 4; i++) {
        pt[i][0] = cx + sx_h[i] * ah + sx_w[i] * bw;
        pt[i][1] = cy + sy_h[i] * bh + sy_w[i] * aw;
    }
    if (!opencv5)
        for (i = 2; i < 4; i++) {
            pt[i][0] = 2.0f * cx - pt[i - 2][0];
            pt[i][1] = 2.0f * cy - pt[i - 2][1];
        }
    for (i = 1; i < 4; i++)  /* insertion sort by x: stable */
        for (j = i; j > 0 && pt[order[j]][0] < pt[order[j - 1]][0]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    pick[0] = pt[order[1]][1] <= pt[order[0]][1];
    pick[1] = 2 + (pt[order[3]][1] <= pt[order[2]][1]);
    pick[2] = 5 - pick[1];
    pick[3] = 1 - pick[0];
    for (i = 0; i < 4; i++) {
        out[2 * i] = pt[order[pick[i]]][0];
        out[2 * i + 1] = pt[order[pick[i]]][1];
    }
}

/* box_corners(rects, opencv5, out): the ordered corners (cv2.boxPoints + the reference's corner
 * order) of a list of cv2.minAreaRect results ((cx, cy), (w, h), angle) into out, (n, 4, 2)
 * float32 C-contiguous. */
static PyObject *box_corners(PyObject *self, PyObject *args)
{
    PyObject *rects, *out_obj, *seq;
    Py_buffer out;
    int opencv5, ok = 1;
    Py_ssize_t n, i;
    (void)self;
    if (!PyArg_ParseTuple(args, "OpO:box_corners", &rects, &opencv5, &out_obj))
        return NULL;
    seq = PySequence_Fast(rects, "rects: expected a sequence");
    if (!seq)
        return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    ok = check(out.itemsize == 4 && out.len == n * 32, "out: expected (n, 4, 2) float32");
    for (i = 0; ok && i < n; i++) {
        float cx, cy, w, h, angle;
        ok = PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "(ff)(ff)f", &cx, &cy, &w, &h, &angle);
        if (ok)
            rect_corners(cx, cy, w, h, angle, opencv5, (float *)out.buf + 8 * i);
    }
    PyBuffer_Release(&out);
    Py_DECREF(seq);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"box_corners", box_corners, METH_VARARGS,
     "box_corners(rects, opencv5, out): cv2.boxPoints of minAreaRect results, in the reference's order."},
    {"threshold", threshold, METH_VARARGS,
     "threshold(map, thresh, dilate, out) -> finite: the bitmap of the DB post-processing."},
    {"ring_sums", ring_sums, METH_VARARGS,
     "ring_sums(points, starts, area, length): shapely's ring area sum and length."},
    {"arc_lengths", arc_lengths, METH_VARARGS,
     "arc_lengths(points, starts, out): cv2.arcLength of closed int32 contours."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_steps",
                                    "Array steps of the DB post-processing.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__steps(void)
{
    return PyModule_Create(&module);
}
