/* The DB box score of every candidate of one map in one call (module _fill): per candidate,
 * the mean of the map crop under its polygon filled as cv2.fillPoly(mask, [poly], 1) fills it
 * (8-connected outline + scanline fill, 16.16 fixed point, clipped to the crop), summed as
 * cv2.mean sums (float64, raster order, times the reciprocal of the count). Written from
 * OpenCV's drawing rules (drawing.cpp: CollectPolyEdges, FillEdgeCollection, clipLine,
 * LineIterator); `compiled.py` checks it against the installed OpenCV before its first use and
 * scores with OpenCV where they differ.
 *
 * polygon_means(map, crops, points, starts, out):
 *   map    2-D float32 (any strides), the probability map;
 *   crops  (n, 4) int64 C-contiguous, inclusive x0, y0, x1, y1 of each score crop in the map;
 *   points (P, 2) int32 C-contiguous, every polygon's vertices in its crop's coordinates;
 *   starts (n + 1,) int64, polygon i is points[starts[i]:starts[i + 1]];
 *   out    (n,) float64, written with the means.
 */
#include "_common.h"

#define XY_SHIFT 16
#define XY_ONE ((int64_t)1 << XY_SHIFT)
#define NONE (-1)

/* The crop's mask and, per row, the first and last pixel set (what the mean has to read). */
typedef struct {
    uint8_t *mask;
    int64_t *lo, *hi;
    int64_t w, h;
} Canvas;

static void set_span(Canvas *c, int64_t y, int64_t x1, int64_t x2)
{
    memset(c->mask + y * c->w + x1, 1, (size_t)(x2 - x1 + 1));
    if (x1 < c->lo[y])
        c->lo[y] = x1;
    if (x2 > c->hi[y])
        c->hi[y] = x2;
}

typedef struct {
    int64_t y0, y1, x, dx;
    int64_t next;  /* index of the next edge of the active list, NONE at its end */
} Edge;

/* Cohen-Sutherland clipping to [0, w) x [0, h) as OpenCV's clipLine: the intersections are
 * computed in double and truncated; the points are updated even when the line misses. */
static int clip_line(int64_t w, int64_t h, int64_t *x1, int64_t *y1, int64_t *x2, int64_t *y2)
{
    int64_t right = w - 1, bottom = h - 1, a;
    int c1, c2;
    if (w <= 0 || h <= 0)
        return 0;
    c1 = (*x1 < 0) + (*x1 > right) * 2 + (*y1 < 0) * 4 + (*y1 > bottom) * 8;
    c2 = (*x2 < 0) + (*x2 > right) * 2 + (*y2 < 0) * 4 + (*y2 > bottom) * 8;
    if ((c1 & c2) == 0 && (c1 | c2) != 0) {
        if (c1 & 12) {
            a = c1 < 8 ? 0 : bottom;
            *x1 += (int64_t)((double)(a - *y1) * (double)(*x2 - *x1) / (double)(*y2 - *y1));
            *y1 = a;
            c1 = (*x1 < 0) + (*x1 > right) * 2;
        }
        if (c2 & 12) {
            a = c2 < 8 ? 0 : bottom;
            *x2 += (int64_t)((double)(a - *y2) * (double)(*x2 - *x1) / (double)(*y2 - *y1));
            *y2 = a;
            c2 = (*x2 < 0) + (*x2 > right) * 2;
        }
        if ((c1 & c2) == 0 && (c1 | c2) != 0) {
            if (c1) {
                a = c1 == 1 ? 0 : right;
                *y1 += (int64_t)((double)(a - *x1) * (double)(*y2 - *y1) / (double)(*x2 - *x1));
                *x1 = a;
                c1 = 0;
            }
            if (c2) {
                a = c2 == 1 ? 0 : right;
                *y2 += (int64_t)((double)(a - *x2) * (double)(*y2 - *y1) / (double)(*x2 - *x1));
                *x2 = a;
                c2 = 0;
            }
        }
    }
    return (c1 | c2) == 0;
}

static int outside(int64_t w, int64_t h, int64_t x, int64_t y)
{
    return x < 0 || x >= w || y < 0 || y >= h;
}

/* An 8-connected line, drawn left to right (OpenCV's LineIterator with leftToRight). */
static void draw_line(Canvas *c, int64_t x1, int64_t y1, int64_t x2, int64_t y2)
{
    int64_t w = c->w, h = c->h, dx, dy, sy = 1, err, i, count;
    int vert;
    if (outside(w, h, x1, y1) || outside(w, h, x2, y2)) {
        if (!clip_line(w, h, &x1, &y1, &x2, &y2))
            return;
    }
    dx = x2 - x1;
    dy = y2 - y1;
    if (dx < 0) {
        dx = -dx;
        dy = -dy;
        x1 = x2;
        y1 = y2;
    }
    if (dy < 0) {
        dy = -dy;
        sy = -1;
    }
    vert = dy > dx;
    if (vert) {
        int64_t t = dx;
        dx = dy;
        dy = t;
    }
    err = dx - (dy + dy);
    count = dx + 1;
    for (i = 0; i < count; i++) {
        int minor = err < 0;
        if (!outside(w, h, x1, y1))
            set_span(c, y1, x1, x1);
        err += -(dy + dy) + (minor ? dx + dx : 0);
        if (vert) {
            y1 += sy;
            x1 += minor;
        } else {
            x1 += 1;
            y1 += minor ? sy : 0;
        }
    }
}

/* The outline of polygon v (n vertices) and its non-horizontal edges (CollectPolyEdges, LINE_8,
 * shift 0). Returns the number of edges written. */
static int64_t collect_edges(Canvas *c, const int32_t *v, int64_t n, Edge *edges)
{
    int64_t w = c->w, h = c->h, i, count = 0;
    int64_t px = v[2 * (n - 1)], py = v[2 * (n - 1) + 1];
    for (i = 0; i < n; i++) {
        int64_t qx = v[2 * i], qy = v[2 * i + 1];
        int64_t t0x = px, t0y = py, t1x = qx, t1y = qy, c0y = py, c1y = qy;
        draw_line(c, px, py, qx, qy);
        if (outside(w, h, t0x, t0y) || outside(w, h, t1x, t1y)) {
            /* the edge starts from its clipped end points (extrapolated back to the vertex) */
            clip_line(w, h, &t0x, &t0y, &t1x, &t1y);
            if (t0y != t1y) {
                c0y = t0y;
                c1y = t1y;
            }
        }
        if (py != qy) {
            Edge *e = &edges[count++];
            int64_t c0x = t0x * XY_ONE, c1x = t1x * XY_ONE;
            e->dx = (c1x - c0x) / (c1y - c0y);  /* C division truncates toward zero */
            if (py < qy) {
                e->y0 = py;
                e->y1 = qy;
                e->x = c0x + (py - c0y) * e->dx;
            } else {
                e->y0 = qy;
                e->y1 = py;
                e->x = c1x + (qy - c1y) * e->dx;
            }
        }
        px = qx;
        py = qy;
    }
    return count;
}

static int compare_edges(const void *a, const void *b)
{
    const Edge *e1 = (const Edge *)a, *e2 = (const Edge *)b;
    if (e1->y0 != e2->y0)
        return e1->y0 < e2->y0 ? -1 : 1;
    if (e1->x != e2->x)
        return e1->x < e2->x ? -1 : 1;
    if (e1->dx != e2->dx)
        return e1->dx < e2->dx ? -1 : 1;
    return 0;
}

static void hline(Canvas *c, int64_t y, int64_t x1, int64_t x2)
{
    if (x1 < c->w && x2 >= 0) {
        if (x1 < 0)
            x1 = 0;
        if (x2 >= c->w)
            x2 = c->w - 1;
        if (x1 <= x2)
            set_span(c, y, x1, x2);
    }
}

/* Scanline fill of the edges (FillEdgeCollection): a sorted edge table, an active list kept
 * in x order by a bubble pass per row, spans between pairs of active edges. `edges` has room
 * for total + 2 entries (the end marker and the list head). */
static void fill_edges(Canvas *c, Edge *edges, int64_t total)
{
    const int64_t w = c->w, h = c->h, delta = XY_ONE - 1, head = total + 1;
    int64_t i, y, e, y_max = INT64_MIN, y_min = INT64_MAX, x_max = INT64_MIN, x_min = INT64_MAX;
    if (total < 2)
        return;
    for (i = 0; i < total; i++) {
        int64_t x1 = edges[i].x + (edges[i].y1 - edges[i].y0) * edges[i].dx;
        y_min = edges[i].y0 < y_min ? edges[i].y0 : y_min;
        y_max = edges[i].y1 > y_max ? edges[i].y1 : y_max;
        x_min = edges[i].x < x_min ? edges[i].x : x_min;
        x_max = edges[i].x > x_max ? edges[i].x : x_max;
        x_min = x1 < x_min ? x1 : x_min;
        x_max = x1 > x_max ? x1 : x_max;
    }
    if (y_max < 0 || y_min >= h || x_max < 0 || x_min >= w * XY_ONE)
        return;
    qsort(edges, (size_t)total, sizeof(Edge), compare_edges);
    edges[total].y0 = INT64_MAX;  /* end marker: never reached */
    edges[head].next = NONE;
    i = 0;
    e = 0;
    if (y_max > h)
        y_max = h;
    for (y = edges[0].y0; y < y_max; y++) {
        int64_t last, prelast = head, keep_prelast;
        int draw = 0, clipline = y < 0;
        last = edges[head].next;
        while (last != NONE || edges[e].y0 == y) {
            if (last != NONE && edges[last].y1 == y) {  /* the edge ends: drop it */
                edges[prelast].next = edges[last].next;
                last = edges[last].next;
                continue;
            }
            keep_prelast = prelast;
            if (last != NONE && (edges[e].y0 > y || edges[last].x < edges[e].x)) {
                prelast = last;
                last = edges[last].next;
            } else if (i < total) {  /* the edge starts: insert it */
                edges[prelast].next = e;
                edges[e].next = last;
                prelast = e;
                e = ++i;
            } else {
                break;
            }
            if (draw) {
                if (!clipline) {
                    int64_t a = edges[keep_prelast].x, b = edges[prelast].x;
                    if (a > b)
                        hline(c, y, (b + delta) >> XY_SHIFT, a >> XY_SHIFT);
                    else
                        hline(c, y, (a + delta) >> XY_SHIFT, b >> XY_SHIFT);
                }
                edges[keep_prelast].x += edges[keep_prelast].dx;
                edges[prelast].x += edges[prelast].dx;
            }
            draw ^= 1;
        }
        /* keep the active list in x order */
        keep_prelast = NONE;
        for (;;) {
            int64_t last_exchange = NONE;
            prelast = head;
            last = edges[head].next;
            while (last != NONE && last != keep_prelast && edges[last].next != NONE) {
                int64_t te = edges[last].next;
                if (edges[last].x > edges[te].x) {
                    edges[prelast].next = te;
                    edges[last].next = edges[te].next;
                    edges[te].next = last;
                    prelast = te;
                    last_exchange = prelast;
                } else {
                    prelast = last;
                    last = te;
                }
            }
            if (last_exchange == NONE)
                break;
            keep_prelast = last_exchange;
            if (keep_prelast == edges[head].next || keep_prelast == head)
                break;
        }
    }
}

/* Mean of the map window at (x0, y0) under the canvas mask, in raster order; clears the mask
 * and the row extents for the next polygon. */
static double window_mean(const char *map, Py_ssize_t row_stride, Py_ssize_t col_stride,
                          int64_t x0, int64_t y0, Canvas *c)
{
    double sum = 0.0;
    int64_t count = 0, x, y;
    for (y = 0; y < c->h; y++) {
        const char *row = map + (y0 + y) * row_stride + x0 * col_stride;
        uint8_t *m = c->mask + y * c->w;
        for (x = c->lo[y]; x <= c->hi[y]; x++) {
            if (m[x]) {
                sum += (double)*(const float *)(row + x * col_stride);
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

static int valid_inputs(const Py_buffer *map, const Py_buffer *crops, const Py_buffer *points,
                        const Py_buffer *starts, const Py_buffer *out, Py_ssize_t *n)
{
    Py_ssize_t i;
    const int64_t *c = (const int64_t *)crops->buf, *s = (const int64_t *)starts->buf;
    if (!check(map->ndim == 2 && map->itemsize == 4 && map->format && strcmp(map->format, "f") == 0,
               "map: expected a 2-D float32 array"))
        return 0;
    if (!check(crops->itemsize == 8 && crops->len % 32 == 0, "crops: expected (n, 4) int64") ||
        !check(points->itemsize == 4 && points->len % 8 == 0, "points: expected (P, 2) int32") ||
        !check(starts->itemsize == 8, "starts: expected int64") ||
        !check(out->itemsize == 8, "out: expected float64"))
        return 0;
    *n = crops->len / 32;
    if (!check(starts->len / 8 == *n + 1 && out->len / 8 == *n, "starts / out: wrong length") ||
        !check(s[0] == 0 && s[*n] <= points->len / 8, "starts: out of range"))
        return 0;
    for (i = 0; i < *n; i++) {
        const int64_t *r = c + 4 * i;
        if (!check(s[i + 1] >= s[i], "starts: not increasing") ||
            !check(r[0] >= 0 && r[1] >= 0 && r[0] <= r[2] && r[1] <= r[3] &&
                   r[2] < map->shape[1] && r[3] < map->shape[0], "crops: outside the map"))
            return 0;
    }
    return 1;
}

/* The means of all n candidates into out; 0 (and MemoryError) when the scratch memory (the
 * largest crop's mask, its row extents, the longest polygon's edges) cannot be had. */
static int score_all(const Py_buffer *map, const int64_t *crops, const int32_t *points,
                     const int64_t *starts, Py_ssize_t n, double *out)
{
    int64_t max_area = 1, max_points = 1, max_h = 1, i, y;
    Canvas c;
    Edge *edges;
    for (i = 0; i < n; i++) {
        int64_t h = crops[4 * i + 3] - crops[4 * i + 1] + 1, k = starts[i + 1] - starts[i];
        int64_t area = (crops[4 * i + 2] - crops[4 * i] + 1) * h;
        max_area = area > max_area ? area : max_area;
        max_h = h > max_h ? h : max_h;
        max_points = k > max_points ? k : max_points;
    }
    c.mask = (uint8_t *)calloc((size_t)max_area, 1);
    c.lo = (int64_t *)malloc(sizeof(int64_t) * (size_t)max_h);
    c.hi = (int64_t *)malloc(sizeof(int64_t) * (size_t)max_h);
    edges = (Edge *)malloc(sizeof(Edge) * (size_t)(max_points + 2));
    if (c.mask && c.lo && c.hi && edges) {
        for (y = 0; y < max_h; y++)
            c.hi[y] = -1;
        Py_BEGIN_ALLOW_THREADS
        for (i = 0; i < n; i++) {
            const int64_t *r = crops + 4 * i;
            int64_t k = starts[i + 1] - starts[i];
            c.w = r[2] - r[0] + 1;
            c.h = r[3] - r[1] + 1;
            for (y = 0; y < c.h; y++)
                c.lo[y] = c.w;
            if (k > 0)
                fill_edges(&c, edges, collect_edges(&c, points + 2 * starts[i], k, edges));
            out[i] = window_mean((const char *)map->buf, map->strides[0], map->strides[1], r[0],
                                 r[1], &c);
        }
        Py_END_ALLOW_THREADS
    }
    i = c.mask && c.lo && c.hi && edges;
    free(c.mask);
    free(c.lo);
    free(c.hi);
    free(edges);
    if (!i)
        PyErr_NoMemory();
    return (int)i;
}

static PyObject *polygon_means(PyObject *self, PyObject *args)
{
    PyObject *objs[5];
    Py_buffer views[5];
    const int flags[5] = {PyBUF_STRIDED_RO | PyBUF_FORMAT, PyBUF_C_CONTIGUOUS, PyBUF_C_CONTIGUOUS,
                          PyBUF_C_CONTIGUOUS, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE};
    int got = 0, ok = 0;
    Py_ssize_t n = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOO:polygon_means", &objs[0], &objs[1], &objs[2], &objs[3],
                          &objs[4]))
        return NULL;
    for (; got < 5; got++)
        if (PyObject_GetBuffer(objs[got], &views[got], flags[got]) < 0)
            break;
    if (got == 5 && valid_inputs(&views[0], &views[1], &views[2], &views[3], &views[4], &n))
        ok = score_all(&views[0], (const int64_t *)views[1].buf, (const int32_t *)views[2].buf,
                       (const int64_t *)views[3].buf, n, (double *)views[4].buf);
    while (got-- > 0)
        PyBuffer_Release(&views[got]);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"polygon_means", polygon_means, METH_VARARGS,
     "polygon_means(map, crops, points, starts, out): cv2.fillPoly + cv2.mean per candidate."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fill",
                                    "The box scores of the DB post-processing.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fill(void)
{
    return PyModule_Create(&module);
}
