/* cv2.fillPoly's rasterisation of one polygon (LINE_8, shift 0, no offset) into a Canvas: the
 * 8-connected outline of every edge plus a scanline fill of the edges in 16.16 fixed point,
 * both clipped to the canvas, as OpenCV's drawing.cpp does it (CollectPolyEdges,
 * FillEdgeCollection, clipLine, LineIterator). Included by _fill.c only. */
#ifndef DBRT_FILLPOLY_H
#define DBRT_FILLPOLY_H

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


/* The pixels cv2.fillPoly(mask, [v], 1) sets for the n-vertex polygon v (in canvas coordinates);
 * edges: room for n + 2 entries. */
static void fill_polygon(Canvas *c, const int32_t *v, int64_t n, Edge *edges)
{
    if (n > 0)
        fill_edges(c, edges, collect_edges(c, v, n, edges));
}

#endif
