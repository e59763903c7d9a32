/* The DB box scores of many candidates in one call (module _fill): per candidate, the mean of
 * its score window under its polygon filled as cv2.fillPoly(mask, [poly], 1) fills it
 * (_fillpoly.h), summed as cv2.mean sums (float64, raster order, times the reciprocal of the
 * count). `compiled.py` checks it against the installed OpenCV before its first use and scores
 * with OpenCV where they differ.
 *
 * polygon_means(map, crops, points, starts, out): windows in one map (the CPU path)
 *   map    2-D float32 (any strides), the probability map;
 *   crops  (n, 4) int64, inclusive x0, y0, x1, y1 of each window in the map;
 * window_means(values, windows, points, starts, out): windows gathered one after the other (the
 * GPU path's host half)
 *   values  1-D float32 C-contiguous, every window's pixels, row by row;
 *   windows (n, 3) int64, offset in values, height, width of each window;
 * and for both
 *   points (P, 2) int32 C-contiguous, every polygon's vertices in its window's coordinates;
 *   starts (n + 1,) int64, polygon i is points[starts[i]:starts[i + 1]];
 *   out    (n,) float64, written with the means.
 * All int64 / int32 / float64 arrays are C-contiguous.
 */
#include "_fillpoly.h"

/* One score window: its first pixel, the byte steps between rows and columns, its size. */
typedef struct {
    const char *base;
    Py_ssize_t row_step, col_step;
    int64_t w, h;
} Window;

/* Mean of the window under the canvas mask, in raster order; clears the mask and the row
 * extents for the next polygon. */
static double window_mean(const Window *win, Canvas *c)
{
    double sum = 0.0;
    int64_t count = 0, x, y;
    for (y = 0; y < c->h; y++) {
        const char *row = win->base + y * win->row_step;
        uint8_t *m = c->mask + y * c->w;
        for (x = c->lo[y]; x <= c->hi[y]; x++) {
            if (m[x]) {
                sum += (double)*(const float *)(row + x * win->col_step);
                count++;
            }
        }
        if (c->lo[y] <= c->hi[y])
            memset(m + c->lo[y], 0, (size_t)(c->hi[y] - c->lo[y] + 1));
        c->lo[y] = c->w;
        c->hi[y] = -1;
    }
    return count ? sum * (1.0 / (double)count) : 0.0;  /* as cv2.mean: times the reciprocal */
}

/* The means of all n windows into out; 0 (and MemoryError) when the scratch memory (the largest
 * window's mask, its row extents, the longest polygon's edges) cannot be had. */
static int score_all(const Window *wins, Py_ssize_t n, const int32_t *points, const int64_t *starts,
                     double *out)
{
    int64_t max_area = 1, max_points = 1, max_h = 1, i, y;
    int ok;
    Canvas c;
    Edge *edges;
    for (i = 0; i < n; i++) {
        int64_t k = starts[i + 1] - starts[i];
        max_area = wins[i].w * wins[i].h > max_area ? wins[i].w * wins[i].h : max_area;
        max_h = wins[i].h > max_h ? wins[i].h : max_h;
        max_points = k > max_points ? k : max_points;
    }
    c.mask = (uint8_t *)calloc((size_t)max_area, 1);
    c.lo = (int64_t *)malloc(sizeof(int64_t) * (size_t)max_h);
    c.hi = (int64_t *)malloc(sizeof(int64_t) * (size_t)max_h);
    edges = (Edge *)malloc(sizeof(Edge) * (size_t)(max_points + 2));
    ok = c.mask && c.lo && c.hi && edges;
    if (ok) {
        for (y = 0; y < max_h; y++)
            c.hi[y] = -1;
        Py_BEGIN_ALLOW_THREADS
        for (i = 0; i < n; i++) {
            c.w = wins[i].w;
            c.h = wins[i].h;
            for (y = 0; y < c.h; y++)
                c.lo[y] = c.w;
            fill_polygon(&c, points + 2 * starts[i], starts[i + 1] - starts[i], edges);
            out[i] = window_mean(&wins[i], &c);
        }
        Py_END_ALLOW_THREADS
    }
    free(c.mask);
    free(c.lo);
    free(c.hi);
    free(edges);
    if (!ok)
        PyErr_NoMemory();
    return ok;
}

/* points, starts and out of n windows: types, lengths, starts increasing within the points. */
static int valid_polygons(const Py_buffer *points, const Py_buffer *starts, const Py_buffer *out,
                          Py_ssize_t n)
{
    const int64_t *s = (const int64_t *)starts->buf;
    Py_ssize_t i;
    if (!check(points->itemsize == 4 && points->len % 8 == 0, "points: expected (P, 2) int32") ||
        !check(starts->itemsize == 8 && starts->len / 8 == n + 1, "starts: expected (n + 1,) int64") ||
        !check(out->itemsize == 8 && out->len / 8 == n, "out: expected (n,) float64") ||
        !check(s[0] == 0 && s[n] <= points->len / 8, "starts: out of range"))
        return 0;
    for (i = 0; i < n; i++)
        if (!check(s[i + 1] >= s[i], "starts: not increasing"))
            return 0;
    return 1;
}

/* The windows of polygon_means (crops in a 2-D float32 map) or window_means (offset, height,
 * width in a 1-D float32 buffer); NULL with a ValueError when one lies outside its source. */
static Window *windows_of(const Py_buffer *source, const Py_buffer *table, int crops, Py_ssize_t *n)
{
    const int64_t *t = (const int64_t *)table->buf;
    int cols = crops ? 4 : 3;
    Py_ssize_t i;
    Window *wins;
    if (!check(source->itemsize == 4 && source->format && strcmp(source->format, "f") == 0 &&
               source->ndim == (crops ? 2 : 1), crops ? "map: expected a 2-D float32 array"
                                                       : "values: expected a 1-D float32 array") ||
        !check(table->itemsize == 8 && table->len % (8 * cols) == 0,
               crops ? "crops: expected (n, 4) int64" : "windows: expected (n, 3) int64"))
        return NULL;
    *n = table->len / (8 * cols);
    wins = (Window *)malloc(sizeof(Window) * (size_t)(*n + 1));
    if (!wins)
        return (Window *)PyErr_NoMemory();
    for (i = 0; i < *n; i++) {
        const int64_t *r = t + cols * i;
        int inside = crops ? r[0] >= 0 && r[1] >= 0 && r[0] <= r[2] && r[1] <= r[3] &&
                                 r[2] < source->shape[1] && r[3] < source->shape[0]
                           : r[0] >= 0 && r[1] >= 1 && r[2] >= 1 && r[1] * r[2] <= source->len / 4 - r[0];
        if (!check(inside, crops ? "crops: outside the map" : "windows: outside the values")) {
            free(wins);
            return NULL;
        }
        if (crops)
            wins[i] = (Window){(const char *)source->buf + r[1] * source->strides[0] + r[0] * source->strides[1],
                               source->strides[0], source->strides[1], r[2] - r[0] + 1, r[3] - r[1] + 1};
        else
            wins[i] = (Window){(const char *)source->buf + 4 * r[0], 4 * r[2], 4, r[2], r[1]};
    }
    return wins;
}

/* The body of both entry points: crops says which kind of source and table they are given. */
static PyObject *means(PyObject *args, const char *format, int crops)
{
    PyObject *objs[5];
    Py_buffer views[5];
    const int flags[5] = {crops ? PyBUF_STRIDED_RO | PyBUF_FORMAT : PyBUF_C_CONTIGUOUS | PyBUF_FORMAT,
                          PyBUF_C_CONTIGUOUS, PyBUF_C_CONTIGUOUS, PyBUF_C_CONTIGUOUS,
                          PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE};
    int got = 0, ok = 0;
    Py_ssize_t n = 0;
    Window *wins = NULL;
    if (!PyArg_ParseTuple(args, format, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4]))
        return NULL;
    for (; got < 5; got++)
        if (PyObject_GetBuffer(objs[got], &views[got], flags[got]) < 0)
            break;
    if (got == 5 && (wins = windows_of(&views[0], &views[1], crops, &n)) != NULL &&
        valid_polygons(&views[2], &views[3], &views[4], n))
        ok = score_all(wins, n, (const int32_t *)views[2].buf, (const int64_t *)views[3].buf,
                       (double *)views[4].buf);
    free(wins);
    while (got-- > 0)
        PyBuffer_Release(&views[got]);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *polygon_means(PyObject *self, PyObject *args)
{
    (void)self;
    return means(args, "OOOOO:polygon_means", 1);
}

static PyObject *window_means(PyObject *self, PyObject *args)
{
    (void)self;
    return means(args, "OOOOO:window_means", 0);
}

static PyMethodDef methods[] = {
    {"polygon_means", polygon_means, METH_VARARGS,
     "polygon_means(map, crops, points, starts, out): cv2.fillPoly + cv2.mean per crop of a map."},
    {"window_means", window_means, METH_VARARGS,
     "window_means(values, windows, points, starts, out): the same over windows gathered in turn."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fill",
                                    "The box scores of the DB post-processing.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fill(void)
{
    return PyModule_Create(&module);
}
