/* qsrv.codec._native: the C half of qsrv/codec/_statevec.py.
 *
 *   crc32(buffer, threads=1, simd=True) -> int
 *   copy_crc32(dst, src, threads=1, simd=True) -> int
 *   SIMD: bool    (the PCLMULQDQ kernels are available on this CPU)
 *
 * Both functions split the buffer into up to `threads` (at most MAX_THREADS) ranges of whole
 * pages, each at least MIN_RANGE long, run one range per thread with the GIL released, and combine the per-range CRCs, so the result is the same as
 * zlib.crc32 over the whole buffer. Argument checking beyond what C needs for memory safety
 * (positive threads, sizes, overlap) is done here too, because this module can be called
 * directly; the friendlier messages live in the Python layer.
 *
 * Invariant while the GIL is released: the Py_buffer views taken here are held, so the exporter
 * (bytearray, mmap, SharedMemory, ndarray) can neither resize nor unmap the memory.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <string.h>

#include "crc32.h"

#define MAX_THREADS 64
#define PAGE ((size_t)4096)
#define MIN_RANGE ((size_t)1 << 20) /* below this a thread costs more than it saves */

typedef struct {
    uint8_t *dst; /* NULL: checksum only */
    const uint8_t *src;
    size_t len;
    int simd;
    uint32_t crc; /* out */
} job_t;

static void *run_job(void *arg)
{
    job_t *j = arg;
    j->crc = j->dst ? qs_crc32_copy(0, j->dst, j->src, j->len, j->simd)
                    : qs_crc32(0, j->src, j->len, j->simd);
    return NULL;
}

/* Runs the copy/checksum over [0, len) in up to `threads` page-aligned ranges; the calling
 * thread takes the first range. Call without the GIL. */
static uint32_t run_parallel(uint8_t *dst, const uint8_t *src, size_t len, int threads, int simd)
{
    job_t jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS];
    size_t most = len / MIN_RANGE;
    int n = threads < MAX_THREADS ? threads : MAX_THREADS; /* jobs[] has MAX_THREADS slots */

    if ((size_t)n > most)
        n = most ? (int)most : 1;
    /* ceil(len / n) rounded up to whole pages, so that n * range >= len: the ranges cover
     * every byte. */
    size_t range = ((len + (size_t)n - 1) / (size_t)n + PAGE - 1) / PAGE * PAGE;
    int used = 0;
    for (size_t off = 0; used < n && off < len; used++, off += range) {
        size_t this_len = len - off < range ? len - off : range;
        jobs[used] = (job_t){dst ? dst + off : NULL, src + off, this_len, simd, 0};
    }
    if (used == 0) /* len == 0 */
        return 0;
    for (int i = 1; i < used; i++)
        started[i] = pthread_create(&tids[i], NULL, run_job, &jobs[i]) == 0;
    run_job(&jobs[0]);
    for (int i = 1; i < used; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            run_job(&jobs[i]); /* could not start a thread: do its range here */
    }
    uint32_t crc = jobs[0].crc;
    for (int i = 1; i < used; i++)
        crc = qs_crc32_combine(crc, jobs[i].crc, jobs[i].len);
    return crc;
}

static int check_threads(int threads)
{
    if (threads < 1) {
        PyErr_SetString(PyExc_ValueError, "threads must be >= 1");
        return -1;
    }
    return 0;
}

static PyObject *py_crc32(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buffer", "threads", "simd", NULL};
    Py_buffer buf;
    int threads = 1, simd = 1;
    (void)self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|ip:crc32", kwlist, &buf, &threads, &simd))
        return NULL;
    if (check_threads(threads) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    uint32_t crc;
    Py_BEGIN_ALLOW_THREADS
    crc = run_parallel(NULL, buf.buf, (size_t)buf.len, threads, simd);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(crc);
}

static PyObject *py_copy_crc32(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"dst", "src", "threads", "simd", NULL};
    Py_buffer dst, src;
    int threads = 1, simd = 1;
    PyObject *result = NULL;
    (void)self;

    /* w*: writable C-contiguous; y*: any C-contiguous bytes-like object. */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "w*y*|ip:copy_crc32", kwlist, &dst, &src,
                                     &threads, &simd))
        return NULL;
    if (check_threads(threads) < 0)
        goto done;
    if (dst.len < src.len) {
        PyErr_Format(PyExc_ValueError, "dst has %zd bytes, src %zd", dst.len, src.len);
        goto done;
    }
    uintptr_t d = (uintptr_t)dst.buf, s = (uintptr_t)src.buf;
    if (src.len > 0 && d < s + (uintptr_t)src.len && s < d + (uintptr_t)src.len) {
        PyErr_SetString(PyExc_ValueError, "dst and src overlap");
        goto done;
    }
    uint32_t crc;
    Py_BEGIN_ALLOW_THREADS
    crc = run_parallel(dst.buf, src.buf, (size_t)src.len, threads, simd);
    Py_END_ALLOW_THREADS
    result = PyLong_FromUnsignedLong(crc);
done:
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return result;
}

static PyMethodDef methods[] = {
    {"crc32", (PyCFunction)(void (*)(void))py_crc32, METH_VARARGS | METH_KEYWORDS,
     "crc32(buffer, threads=1, simd=True) -> int\n\n"
     "zlib.crc32(buffer), computed by `threads` threads with the GIL released."},
    {"copy_crc32", (PyCFunction)(void (*)(void))py_copy_crc32, METH_VARARGS | METH_KEYWORDS,
     "copy_crc32(dst, src, threads=1, simd=True) -> int\n\n"
     "Copy src into the start of dst and return zlib.crc32(src), in one pass, by `threads`\n"
     "threads with the GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "qsrv.codec._native",
    "Native state-vector kernels: CRC-32 and fused copy + CRC-32.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    qs_crc32_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *simd = PyBool_FromLong(qs_crc32_have_simd());
    int rc = PyModule_AddObjectRef(m, "SIMD", simd);
    Py_DECREF(simd);
    if (rc < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
