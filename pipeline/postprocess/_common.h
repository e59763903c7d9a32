/* What the two C modules of the post-processing share (see _fill.c and _steps.c). */
#ifndef DBRT_POSTPROCESS_COMMON_H
#define DBRT_POSTPROCESS_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#if defined(_MSC_VER)
#define restrict __restrict
#endif

/* Sets a ValueError with `message` unless ok; returns ok. */
static int check(int ok, const char *message)
{
    if (!ok)
        PyErr_SetString(PyExc_ValueError, message);
    return ok;
}

#endif
