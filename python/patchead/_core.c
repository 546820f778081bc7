/* _core.c — the CPython extension under the patchead package: a thin C-API layer over
 * include/patchead.h (the same header the CLI uses; no library internals).
 *
 * Why the plain C API (not cffi, not the numpy C API): no build or run-time dependency
 * beyond CPython and a C compiler; the GIL can be released exactly around each library
 * call; arrays cross the boundary through the buffer protocol, so numpy wraps the
 * results without a copy (np.frombuffer on a bytearray) and no numpy headers are needed.
 * The friendly API (Model, Bank, Result, argument checks) is Python in __init__.py;
 * this file only converts arguments, releases the GIL, and maps pe_status to the
 * patchead.Error subclasses registered by __init__.py.
 *
 * Threads: while the GIL is released, a per-object lock serialises calls on one
 * pe_model / pe_bank (a model owns its scratch buffers, so two threads must not run the
 * same model at once). Lock order: model before bank. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include "patchead.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ errors */

#define NUM_STATUS 9 /* PE_OK .. PE_ERR_LIMIT */
static PyObject *error_classes[NUM_STATUS];

/* Raise the registered class for `status` with `message`. Returns NULL. */
static PyObject *raise_status(pe_status status, const char *message)
{
    PyObject *cls = (int)status > 0 && (int)status < NUM_STATUS ? error_classes[status] : NULL;
    PyErr_SetString(cls ? cls : PyExc_RuntimeError,
                    message && *message ? message : pe_status_name(status));
    return NULL;
}

static PyObject *raise_fmt(pe_status status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return raise_status(status, msg);
}

/* A library call made without the GIL keeps its message here (pe_last_error is
 * thread-local and this is the same OS thread, but copying right after the call keeps
 * it safe from any library call made in between). */
typedef struct {
    pe_status status;
    char message[1024];
} call_result;

static void keep_error(call_result *r, pe_status s)
{
    r->status = s;
    if (s) snprintf(r->message, sizeof r->message, "%s", pe_last_error());
    else r->message[0] = 0;
}

static PyObject *register_errors(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) != NUM_STATUS) {
        PyErr_SetString(PyExc_TypeError, "_register_errors expects a tuple of 9 classes");
        return NULL;
    }
    for (int i = 0; i < NUM_STATUS; i++) {
        PyObject *c = PyTuple_GET_ITEM(arg, i);
        Py_XDECREF(error_classes[i]);
        error_classes[i] = c == Py_None ? NULL : (Py_INCREF(c), c);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ buffers */

/* A C-contiguous buffer of `count` items of one type ('f' float32 or 'B' uint8);
 * count < 0: any length. `what` names the argument in messages. */
static int get_typed(PyObject *obj, char type, Py_ssize_t count, const char *what, Py_buffer *view,
                     int writable)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        raise_fmt(PE_ERR_ARG, "%s: expects a C-contiguous %s array, got %s", what,
                  type == 'f' ? "float32" : "uint8", Py_TYPE(obj)->tp_name);
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    size_t item = type == 'f' ? 4 : 1;
    if (f[0] != type || f[1] || (size_t)view->itemsize != item) {
        raise_fmt(PE_ERR_ARG, "%s: expects %s items, got format '%s'", what,
                  type == 'f' ? "float32" : "uint8", view->format ? view->format : "?");
        PyBuffer_Release(view);
        return -1;
    }
    if (count >= 0 && view->len != count * (Py_ssize_t)item) {
        raise_fmt(PE_ERR_SHAPE, "%s: expects %zd values, got %zd", what, count,
                  view->len / (Py_ssize_t)item);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* New bytearray holding a copy of n bytes (NULL src: zero-filled). */
static PyObject *bytes_copy(const void *src, size_t n)
{
    PyObject *b = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (b && n) {
        if (src) memcpy(PyByteArray_AS_STRING(b), src, n);
        else memset(PyByteArray_AS_STRING(b), 0, n);
    }
    return b;
}

/* ------------------------------------------------------------------ images */

/* An image argument: a path (str / os.PathLike), encoded bytes (PNG/JPEG/BMP), or an
 * (H, W, 3) uint8 C-contiguous buffer (used in place, not copied). */
typedef struct {
    pe_image img;
    Py_buffer view;
    int has_view; /* img.rgb points into view */
    int owned;    /* img.rgb decoded by the library: pe_image_free */
} image_arg;

static void image_arg_release(image_arg *a)
{
    if (a->has_view) PyBuffer_Release(&a->view);
    if (a->owned) pe_image_free(&a->img);
    memset(a, 0, sizeof *a);
}

static int image_arg_get(PyObject *obj, image_arg *a)
{
    memset(a, 0, sizeof *a);
    call_result r = {0};
    if (PyBytes_Check(obj)) {
        const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(obj);
        size_t n = (size_t)PyBytes_GET_SIZE(obj);
        Py_BEGIN_ALLOW_THREADS keep_error(&r, pe_image_decode(data, n, "<bytes>", &a->img));
        Py_END_ALLOW_THREADS if (r.status) return raise_status(r.status, r.message), -1;
        a->owned = 1;
        return 0;
    }
    if (PyUnicode_Check(obj) || PyObject_HasAttrString(obj, "__fspath__")) {
        PyObject *path = NULL;
        if (!PyUnicode_FSConverter(obj, &path)) return -1;
        const char *p = PyBytes_AS_STRING(path);
        Py_BEGIN_ALLOW_THREADS keep_error(&r, pe_image_load(p, &a->img));
        Py_END_ALLOW_THREADS Py_DECREF(path);
        if (r.status) return raise_status(r.status, r.message), -1;
        a->owned = 1;
        return 0;
    }
    if (get_typed(obj, 'B', -1, "image", &a->view, 0)) return -1;
    a->has_view = 1;
    if (a->view.ndim != 3 || a->view.shape[2] != 3 || a->view.shape[0] < 1 ||
        a->view.shape[1] < 1) {
        raise_status(PE_ERR_SHAPE, "image: expects an (H, W, 3) RGB array");
        image_arg_release(a);
        return -1;
    }
    Py_ssize_t h = a->view.shape[0], w = a->view.shape[1];
    if (h > PE_MAX_IMAGE_SIDE || w > PE_MAX_IMAGE_SIDE ||
        (size_t)h * (size_t)w > PE_MAX_IMAGE_PIXELS) {
        raise_fmt(PE_ERR_LIMIT, "image: %zdx%zd pixels exceeds the limit (%d per side, %u in all)",
                  w, h, PE_MAX_IMAGE_SIDE, PE_MAX_IMAGE_PIXELS);
        image_arg_release(a);
        return -1;
    }
    a->img.width = (int)w;
    a->img.height = (int)h;
    a->img.rgb = (uint8_t *)a->view.buf; /* read only by the library */
    return 0;
}

/* load_image(src) -> (bytearray rgb, width, height) */
static PyObject *py_load_image(PyObject *self, PyObject *arg)
{
    (void)self;
    image_arg a;
    if (image_arg_get(arg, &a)) return NULL;
    PyObject *rgb = bytes_copy(a.img.rgb, (size_t)a.img.width * a.img.height * 3);
    PyObject *res = rgb ? Py_BuildValue("(Nii)", rgb, a.img.width, a.img.height) : NULL;
    image_arg_release(&a);
    return res;
}

/* ------------------------------------------------------------------ features */

/* A features tuple from Python: (data float32 (G*D), grid_h, grid_w, dim, attn or None).
 * The pe_features view points into the buffers (never freed by the library). */
typedef struct {
    pe_features f;
    Py_buffer data, attn;
    int has_data, has_attn;
} features_arg;

static void features_arg_release(features_arg *a)
{
    if (a->has_data) PyBuffer_Release(&a->data);
    if (a->has_attn) PyBuffer_Release(&a->attn);
    memset(a, 0, sizeof *a);
}

static int features_arg_get(PyObject *obj, features_arg *a)
{
    memset(a, 0, sizeof *a);
    PyObject *data, *attn;
    int gh, gw, dim;
    if (!PyTuple_Check(obj) || !PyArg_ParseTuple(obj, "OiiiO", &data, &gh, &gw, &dim, &attn)) {
        if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            raise_status(PE_ERR_ARG, "features: expects a Features object");
        }
        return -1;
    }
    if (gh < 1 || gw < 1 || dim < 1 || (int64_t)gh * gw * dim > ((int64_t)1 << 40))
        return raise_fmt(PE_ERR_SHAPE, "features: bad grid %dx%d, dim %d", gh, gw, dim), -1;
    if (get_typed(data, 'f', (Py_ssize_t)gh * gw * dim, "features", &a->data, 0)) return -1;
    a->has_data = 1;
    if (attn != Py_None) {
        if (get_typed(attn, 'f', (Py_ssize_t)gh * gw, "features attention", &a->attn, 0)) {
            features_arg_release(a);
            return -1;
        }
        a->has_attn = 1;
    }
    a->f.grid_h = gh;
    a->f.grid_w = gw;
    a->f.dim = dim;
    a->f.data = a->data.buf;
    a->f.attn = a->has_attn ? a->attn.buf : NULL;
    return 0;
}

/* pe_features -> (bytearray data, grid_h, grid_w, dim, bytearray attn or None) */
static PyObject *features_tuple(const pe_features *f)
{
    size_t g = (size_t)f->grid_h * f->grid_w;
    PyObject *data = bytes_copy(f->data, g * f->dim * sizeof(float));
    if (!data) return NULL;
    PyObject *attn =
        f->attn ? bytes_copy(f->attn, g * sizeof(float)) : (Py_INCREF(Py_None), Py_None);
    if (!attn) {
        Py_DECREF(data);
        return NULL;
    }
    return Py_BuildValue("(NiiiN)", data, f->grid_h, f->grid_w, f->dim, attn);
}

/* pe_result (+ the image size) -> (score, grid_h, grid_w, bytearray patch scores, aligned,
 * align_failed, width, height). */
static PyObject *result_tuple(const pe_result *r, int width, int height)
{
    PyObject *patches = bytes_copy(r->patch_scores, (size_t)r->grid_h * r->grid_w * sizeof(float));
    if (!patches) return NULL;
    return Py_BuildValue("(diiNiiii)", (double)r->image_score, r->grid_h, r->grid_w, patches,
                         r->aligned, r->align_failed, width, height);
}

/* ------------------------------------------------------------------ argument lists */

typedef int (*arg_get_fn)(PyObject *obj, void *arg);
typedef void (*arg_release_fn)(void *arg);

/* A sequence of arguments converted one by one into an array of `size`-byte entries
 * (images, features). Returns the array (release with args_release) or NULL. */
static void *args_get(PyObject *seq_obj, size_t size, arg_get_fn get, arg_release_fn release,
                      const char *what, Py_ssize_t *n_out)
{
    PyObject *seq = PySequence_Fast(seq_obj, what);
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    char *args = PyMem_Calloc((size_t)(n ? n : 1), size);
    if (!args) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (get(PySequence_Fast_GET_ITEM(seq, i), args + (size_t)i * size)) {
            for (Py_ssize_t k = 0; k < i; k++) release(args + (size_t)k * size);
            PyMem_Free(args);
            Py_DECREF(seq);
            return NULL;
        }
    Py_DECREF(seq);
    *n_out = n;
    return args;
}

static void args_release(void *args, Py_ssize_t n, size_t size, arg_release_fn release)
{
    for (Py_ssize_t i = 0; args && i < n; i++) release((char *)args + (size_t)i * size);
    PyMem_Free(args);
}

static int image_get_any(PyObject *obj, void *arg) { return image_arg_get(obj, arg); }
static void image_release_any(void *arg) { image_arg_release(arg); }
static int features_get_any(PyObject *obj, void *arg) { return features_arg_get(obj, arg); }
static void features_release_any(void *arg) { features_arg_release(arg); }

static image_arg *image_args_get(PyObject *seq, Py_ssize_t *n)
{
    return args_get(seq, sizeof(image_arg), image_get_any, image_release_any,
                    "images: expects a sequence of images", n);
}

static void image_args_release(image_arg *args, Py_ssize_t n)
{
    args_release(args, n, sizeof *args, image_release_any);
}

static features_arg *features_args_get(PyObject *seq, Py_ssize_t *n)
{
    return args_get(seq, sizeof(features_arg), features_get_any, features_release_any,
                    "features: expects a sequence of Features", n);
}

static void features_args_release(features_arg *args, Py_ssize_t n)
{
    args_release(args, n, sizeof *args, features_release_any);
}

/* ------------------------------------------------------------------ detect params */

static int dict_int(PyObject *d, const char *key, int *out)
{
    PyObject *v = PyDict_GetItemString(d, key); /* borrowed */
    if (!v || v == Py_None) return 0;
    long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    *out = (int)x;
    return 0;
}

static int dict_float(PyObject *d, const char *key, float *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v || v == Py_None) return 0;
    double x = PyFloat_AsDouble(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    *out = (float)x;
    return 0;
}

/* pe_detect_params from a dict with optional keys: zeroshot, preset, order ("lowest" /
 * "highest"), k_count, k_fraction, top_count, top_fraction, size, layer, align, mask,
 * sigma. Values were range-checked by the Python layer; the library checks them again. */
static int detect_params_get(PyObject *d, pe_detect_params *p)
{
    if (!PyDict_Check(d)) return PyErr_SetString(PyExc_TypeError, "params: expects a dict"), -1;
    int zeroshot = 0;
    if (dict_int(d, "zeroshot", &zeroshot)) return -1;
    *p = pe_detect_default_params(zeroshot);
    PyObject *preset = PyDict_GetItemString(d, "preset");
    if (preset && preset != Py_None) {
        const char *name = PyUnicode_AsUTF8(preset);
        if (!name) return -1;
        if (pe_score_preset(name, zeroshot, &p->score))
            return raise_status(PE_ERR_ARG, pe_last_error()), -1;
    }
    PyObject *order = PyDict_GetItemString(d, "order");
    if (order && order != Py_None) {
        const char *o = PyUnicode_AsUTF8(order);
        if (!o) return -1;
        if (!strcmp(o, "lowest")) p->score.order = PE_ORDER_LOWEST;
        else if (!strcmp(o, "highest")) p->score.order = PE_ORDER_HIGHEST;
        else return raise_fmt(PE_ERR_ARG, "order: expects 'lowest' or 'highest', got '%s'", o), -1;
    }
    int k_count = -1, top_count = -1;
    float k_fraction = -1, top_fraction = -1;
    if (dict_int(d, "k_count", &k_count) || dict_float(d, "k_fraction", &k_fraction) ||
        dict_int(d, "top_count", &top_count) || dict_float(d, "top_fraction", &top_fraction) ||
        dict_int(d, "size", &p->size) || dict_int(d, "layer", &p->layer) ||
        dict_int(d, "align", &p->align) || dict_int(d, "mask", &p->mask) ||
        dict_float(d, "sigma", &p->map_sigma))
        return -1;
    if (k_count > 0) p->score.k_count = k_count;
    else if (k_fraction > 0) p->score.k_count = 0, p->score.k_fraction = k_fraction;
    if (top_count > 0) p->score.top_count = top_count;
    else if (top_fraction > 0) p->score.top_count = 0, p->score.top_fraction = top_fraction;
    return 0;
}

static PyObject *detect_params_dict(const pe_detect_params *p)
{
    return Py_BuildValue("{s:s,s:i,s:d,s:i,s:d,s:i,s:i,s:O,s:O,s:d,s:d,s:d}", "order",
                         p->score.order == PE_ORDER_LOWEST ? "lowest" : "highest", "k_count",
                         p->score.k_count, "k_fraction", (double)p->score.k_fraction, "top_count",
                         p->score.top_count, "top_fraction", (double)p->score.top_fraction, "size",
                         p->size, "layer", p->layer, "align", p->align ? Py_True : Py_False, "mask",
                         p->mask ? Py_True : Py_False, "sigma", (double)p->map_sigma,
                         "mask_threshold", (double)p->score.mask_threshold, "mask_low_weight",
                         (double)p->score.mask_low_weight);
}

/* ------------------------------------------------------------------ Model */

typedef struct {
    PyObject_HEAD pe_model *model;
    PyThread_type_lock lock;
} ModelObject;

static PyTypeObject ModelType;

static int Model_init(ModelObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"path", "threads", NULL};
    PyObject *path_obj = NULL;
    int threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|i", names, PyUnicode_FSConverter, &path_obj,
                                     &threads))
        return -1;
    if (self->model) {
        Py_DECREF(path_obj);
        PyErr_SetString(PyExc_RuntimeError, "Model is already initialised");
        return -1;
    }
    if (!self->lock && !(self->lock = PyThread_allocate_lock())) {
        Py_DECREF(path_obj);
        PyErr_NoMemory();
        return -1;
    }
    pe_model_params mp = pe_model_default_params();
    mp.threads = threads;
    const char *path = PyBytes_AS_STRING(path_obj);
    call_result r;
    Py_BEGIN_ALLOW_THREADS keep_error(&r, pe_model_load(path, &mp, &self->model));
    Py_END_ALLOW_THREADS Py_DECREF(path_obj);
    if (r.status) return raise_status(r.status, r.message), -1;
    return 0;
}

static void Model_dealloc(ModelObject *self)
{
    pe_model_free(self->model);
    if (self->lock) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int model_ready(ModelObject *m)
{
    if (!m->model) return PyErr_SetString(PyExc_RuntimeError, "Model is not initialised"), -1;
    return 0;
}

static PyObject *Model_info(ModelObject *self, PyObject *noargs)
{
    (void)noargs;
    if (model_ready(self)) return NULL;
    pe_model_info in;
    pe_status s = pe_model_get_info(self->model, &in);
    if (s) return raise_status(s, pe_last_error());
    return Py_BuildValue(
        "{s:s,s:s,s:s,s:O,s:O,s:i,s:i,s:i,s:i,s:i,s:L,s:(ddd),s:(ddd),s:s}", "family", in.family,
        "name", in.name, "dtype", in.dtype, "is_vit", in.is_vit ? Py_True : Py_False,
        "has_attention", in.has_attention ? Py_True : Py_False, "patch_size", in.patch_size,
        "feature_dim", in.feature_dim, "num_layers", in.num_layers, "hidden_dim", in.hidden_dim,
        "default_size", in.default_size, "num_params", (long long)in.num_params, "mean",
        (double)in.mean[0], (double)in.mean[1], (double)in.mean[2], "std", (double)in.std[0],
        (double)in.std[1], (double)in.std[2], "weights_hash", in.weights_hash);
}

/* extract(image, size=0, layer=0, attn=False) -> features tuple (see features_tuple) */
static PyObject *Model_extract(ModelObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"image", "size", "layer", "attn", NULL};
    PyObject *src;
    int size = 0, layer = 0, want_attn = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|iip", names, &src, &size, &layer, &want_attn))
        return NULL;
    if (model_ready(self)) return NULL;
    image_arg a;
    if (image_arg_get(src, &a)) return NULL;
    pe_extract_params ep = pe_extract_default_params();
    ep.size = size;
    ep.layer = layer;
    ep.want_attn = want_attn;
    pe_features f = {0};
    call_result r;
    Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(self->lock, WAIT_LOCK);
    keep_error(&r, pe_model_extract(self->model, &a.img, &ep, &f));
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS image_arg_release(&a);
    if (r.status) return raise_status(r.status, r.message);
    PyObject *res = features_tuple(&f);
    pe_features_free(&f);
    return res;
}

static PyMethodDef Model_methods[] = {
    {"info", (PyCFunction)Model_info, METH_NOARGS, "Backbone facts as a dict."},
    {"extract", (PyCFunction)(void (*)(void))Model_extract, METH_VARARGS | METH_KEYWORDS,
     "extract(image, size=0, layer=0, attn=False) -> (data, grid_h, grid_w, dim, attn)"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "patchead._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Model(path, threads=0): a loaded backbone (pe_model).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Model_init,
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_methods = Model_methods,
};

static int as_model(PyObject *obj, ModelObject **out)
{
    if (!PyObject_TypeCheck(obj, &ModelType)) {
        raise_fmt(PE_ERR_ARG, "model: expects a patchead.Model, got %s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = (ModelObject *)obj;
    return model_ready(*out);
}

/* ------------------------------------------------------------------ Bank */

typedef struct {
    PyObject_HEAD pe_bank *bank;
    PyThread_type_lock lock;
} BankObject;

static PyTypeObject BankType;

static PyObject *bank_wrap(pe_bank *b)
{
    BankObject *o = PyObject_New(BankObject, &BankType);
    if (!o) {
        pe_bank_free(b);
        return NULL;
    }
    o->bank = b;
    o->lock = PyThread_allocate_lock();
    if (!o->lock) {
        Py_DECREF(o);
        return PyErr_NoMemory();
    }
    return (PyObject *)o;
}

static void Bank_dealloc(BankObject *self)
{
    pe_bank_free(self->bank);
    if (self->lock) PyThread_free_lock(self->lock);
    PyObject_Free(self);
}

/* save(path) */
static PyObject *Bank_save(BankObject *self, PyObject *arg)
{
    PyObject *path_obj;
    if (!PyUnicode_FSConverter(arg, &path_obj)) return NULL;
    const char *path = PyBytes_AS_STRING(path_obj);
    call_result r;
    Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(self->lock, WAIT_LOCK);
    keep_error(&r, pe_bank_save(self->bank, path));
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS Py_DECREF(path_obj);
    if (r.status) return raise_status(r.status, r.message);
    Py_RETURN_NONE;
}

/* check_model(model): MismatchError unless the bank was fit with these weights. */
static PyObject *Bank_check_model(BankObject *self, PyObject *arg)
{
    ModelObject *m;
    if (as_model(arg, &m)) return NULL;
    pe_status s = pe_bank_check_model(self->bank, m->model);
    if (s) return raise_status(s, pe_last_error());
    Py_RETURN_NONE;
}

/* predict(model, image) -> result tuple */
static PyObject *Bank_predict(BankObject *self, PyObject *args)
{
    PyObject *model_obj, *src;
    ModelObject *m;
    if (!PyArg_ParseTuple(args, "OO", &model_obj, &src) || as_model(model_obj, &m)) return NULL;
    image_arg a;
    if (image_arg_get(src, &a)) return NULL;
    pe_result res = {0};
    call_result r;
    Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(m->lock, WAIT_LOCK);
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    keep_error(&r, pe_bank_predict(self->bank, m->model, &a.img, &res));
    PyThread_release_lock(self->lock);
    PyThread_release_lock(m->lock);
    Py_END_ALLOW_THREADS int w = a.img.width, h = a.img.height;
    image_arg_release(&a);
    PyObject *out = r.status ? raise_status(r.status, r.message) : result_tuple(&res, w, h);
    pe_result_free(&res);
    return out;
}

/* predict_features(features, width, height) -> result tuple (no alignment possible) */
static PyObject *Bank_predict_features(BankObject *self, PyObject *args)
{
    PyObject *fobj;
    int w, h;
    if (!PyArg_ParseTuple(args, "Oii", &fobj, &w, &h)) return NULL;
    features_arg fa;
    if (features_arg_get(fobj, &fa)) return NULL;
    pe_result res = {0};
    call_result r;
    Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(self->lock, WAIT_LOCK);
    keep_error(&r, pe_bank_predict_features(self->bank, &fa.f, &res));
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS features_arg_release(&fa);
    PyObject *out = r.status ? raise_status(r.status, r.message) : result_tuple(&res, w, h);
    pe_result_free(&res);
    return out;
}

static PyObject *Bank_params(BankObject *self, PyObject *noargs)
{
    (void)noargs;
    return detect_params_dict(pe_bank_params(self->bank));
}

static PyObject *Bank_get_threshold(BankObject *self, void *closure)
{
    (void)closure;
    return PyFloat_FromDouble((double)pe_bank_threshold(self->bank));
}

static int Bank_set_threshold(BankObject *self, PyObject *value, void *closure)
{
    (void)closure;
    if (!value) return PyErr_SetString(PyExc_AttributeError, "threshold cannot be deleted"), -1;
    double t = PyFloat_AsDouble(value);
    if (t == -1 && PyErr_Occurred()) return -1;
    /* With the GIL held, wait for a predict / save running without it (they release the
     * bank lock before taking the GIL back, so this cannot deadlock). */
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    pe_bank_set_threshold(self->bank, (float)t);
    PyThread_release_lock(self->lock);
    return 0;
}

static PyObject *Bank_get_model_path(BankObject *self, void *closure)
{
    (void)closure;
    return PyUnicode_DecodeFSDefault(pe_bank_model_path(self->bank));
}

static int Bank_set_model_path(BankObject *self, PyObject *value, void *closure)
{
    (void)closure;
    PyObject *path_obj;
    if (!value) return PyErr_SetString(PyExc_AttributeError, "model_path cannot be deleted"), -1;
    if (!PyUnicode_FSConverter(value, &path_obj)) return -1;
    PyThread_acquire_lock(self->lock, WAIT_LOCK); /* see Bank_set_threshold */
    pe_bank_set_model_path(self->bank, PyBytes_AS_STRING(path_obj));
    PyThread_release_lock(self->lock);
    Py_DECREF(path_obj);
    return 0;
}

static PyObject *Bank_get_num_refs(BankObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(pe_bank_num_refs(self->bank));
}

static PyGetSetDef Bank_getset[] = {
    {"threshold", (getter)Bank_get_threshold, (setter)Bank_set_threshold,
     "label-free threshold (NaN if unknown)", NULL},
    {"model_path", (getter)Bank_get_model_path, (setter)Bank_set_model_path,
     "model path recorded in the bank", NULL},
    {"num_refs", (getter)Bank_get_num_refs, NULL, "number of reference images", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef Bank_methods[] = {
    {"save", (PyCFunction)Bank_save, METH_O, "save(path): atomic write of the .pead file"},
    {"check_model", (PyCFunction)Bank_check_model, METH_O, "check_model(model)"},
    {"predict", (PyCFunction)Bank_predict, METH_VARARGS, "predict(model, image) -> result tuple"},
    {"predict_features", (PyCFunction)Bank_predict_features, METH_VARARGS,
     "predict_features(features, width, height) -> result tuple"},
    {"params", (PyCFunction)Bank_params, METH_NOARGS, "the bank's detection parameters"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject BankType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "patchead._core.Bank",
    .tp_basicsize = sizeof(BankObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A fitted reference bank (pe_bank); made by bank_fit / bank_load.",
    .tp_dealloc = (destructor)Bank_dealloc,
    .tp_methods = Bank_methods,
    .tp_getset = Bank_getset,
};

/* bank_fit(model, images, names or None, params) -> Bank */
static PyObject *py_bank_fit(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *model_obj, *images, *names_obj, *params_obj;
    ModelObject *m;
    pe_detect_params p;
    if (!PyArg_ParseTuple(args, "OOOO", &model_obj, &images, &names_obj, &params_obj) ||
        as_model(model_obj, &m) || detect_params_get(params_obj, &p))
        return NULL;
    Py_ssize_t n = 0;
    image_arg *imgs = image_args_get(images, &n);
    if (!imgs) return NULL;
    pe_image *refs = PyMem_Calloc((size_t)(n ? n : 1), sizeof *refs);
    const char **names = PyMem_Calloc((size_t)(n ? n : 1), sizeof *names);
    PyObject *keep = PyList_New(0); /* owns the encoded names */
    PyObject *out = NULL;
    if (!refs || !names || !keep) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) refs[i] = imgs[i].img;
    if (names_obj != Py_None) {
        PyObject *seq = PySequence_Fast(names_obj, "names: expects a sequence");
        if (!seq) goto done;
        for (Py_ssize_t i = 0; i < n && i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *enc = NULL;
            if (item == Py_None) continue;
            if (!PyUnicode_FSConverter(item, &enc) || PyList_Append(keep, enc)) {
                Py_XDECREF(enc);
                Py_DECREF(seq);
                goto done;
            }
            Py_DECREF(enc);
            names[i] = PyBytes_AS_STRING(enc);
        }
        Py_DECREF(seq);
    }
    pe_bank *bank = NULL;
    call_result r;
    Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(m->lock, WAIT_LOCK);
    keep_error(&r, pe_bank_fit(m->model, refs, (int)n, names, &p, &bank));
    PyThread_release_lock(m->lock);
    Py_END_ALLOW_THREADS out = r.status ? raise_status(r.status, r.message) : bank_wrap(bank);
done:
    Py_XDECREF(keep);
    PyMem_Free(names);
    PyMem_Free(refs);
    image_args_release(imgs, n);
    return out;
}

/* bank_fit_features(model, features list, params) -> Bank */
static PyObject *py_bank_fit_features(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *model_obj, *feats_obj, *params_obj;
    ModelObject *m;
    pe_detect_params p;
    if (!PyArg_ParseTuple(args, "OOO", &model_obj, &feats_obj, &params_obj) ||
        as_model(model_obj, &m) || detect_params_get(params_obj, &p))
        return NULL;
    Py_ssize_t n = 0;
    features_arg *fa = features_args_get(feats_obj, &n);
    if (!fa) return NULL;
    pe_features *f = PyMem_Calloc((size_t)(n ? n : 1), sizeof *f);
    if (!f) {
        features_args_release(fa, n);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) f[i] = fa[i].f;
    pe_bank *bank = NULL;
    call_result r;
    Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(m->lock, WAIT_LOCK);
    keep_error(&r, pe_bank_fit_features(m->model, f, (int)n, &p, &bank));
    PyThread_release_lock(m->lock);
    Py_END_ALLOW_THREADS PyMem_Free(f);
    features_args_release(fa, n);
    return r.status ? raise_status(r.status, r.message) : bank_wrap(bank);
}

/* bank_load(path, model or None) -> Bank */
static PyObject *py_bank_load(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *path_obj, *model_obj;
    ModelObject *m = NULL;
    if (!PyArg_ParseTuple(args, "O&O", PyUnicode_FSConverter, &path_obj, &model_obj)) return NULL;
    if (model_obj != Py_None && as_model(model_obj, &m)) {
        Py_DECREF(path_obj);
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    pe_bank *bank = NULL;
    call_result r;
    Py_BEGIN_ALLOW_THREADS if (m) PyThread_acquire_lock(m->lock, WAIT_LOCK);
    keep_error(&r, pe_bank_load(path, m ? m->model : NULL, &bank));
    if (m) PyThread_release_lock(m->lock);
    Py_END_ALLOW_THREADS Py_DECREF(path_obj);
    return r.status ? raise_status(r.status, r.message) : bank_wrap(bank);
}

/* ------------------------------------------------------------------ zero-shot */

static PyObject *results_list(pe_result *res, Py_ssize_t n, const int *w, const int *h)
{
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list && i < n; i++) {
        PyObject *t = result_tuple(&res[i], w[i], h[i]);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

/* zeroshot(model, images, params) -> list of result tuples */
static PyObject *py_zeroshot(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *model_obj, *images, *params_obj;
    ModelObject *m;
    pe_detect_params p;
    if (!PyArg_ParseTuple(args, "OOO", &model_obj, &images, &params_obj) ||
        as_model(model_obj, &m) || detect_params_get(params_obj, &p))
        return NULL;
    Py_ssize_t n = 0;
    image_arg *imgs = image_args_get(images, &n);
    if (!imgs) return NULL;
    size_t cap = (size_t)(n ? n : 1);
    pe_image *batch = PyMem_Calloc(cap, sizeof *batch);
    pe_result *res = PyMem_Calloc(cap, sizeof *res);
    int *w = PyMem_Calloc(cap, sizeof *w), *h = PyMem_Calloc(cap, sizeof *h);
    PyObject *out = NULL;
    if (!batch || !res || !w || !h) {
        PyErr_NoMemory();
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            batch[i] = imgs[i].img;
            w[i] = imgs[i].img.width;
            h[i] = imgs[i].img.height;
        }
        call_result r;
        Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(m->lock, WAIT_LOCK);
        keep_error(&r, pe_zeroshot(m->model, batch, (int)n, &p, NULL, NULL, res));
        PyThread_release_lock(m->lock);
        Py_END_ALLOW_THREADS out =
            r.status ? raise_status(r.status, r.message) : results_list(res, n, w, h);
        for (Py_ssize_t i = 0; !r.status && i < n; i++) pe_result_free(&res[i]);
    }
    PyMem_Free(batch);
    PyMem_Free(res);
    PyMem_Free(w);
    PyMem_Free(h);
    image_args_release(imgs, n);
    return out;
}

/* zeroshot_features(features list, sizes [(w, h)...], params) -> list of result tuples */
static PyObject *py_zeroshot_features(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *feats_obj, *sizes_obj, *params_obj;
    pe_detect_params p;
    if (!PyArg_ParseTuple(args, "OOO", &feats_obj, &sizes_obj, &params_obj) ||
        detect_params_get(params_obj, &p))
        return NULL;
    Py_ssize_t n = 0;
    features_arg *fa = features_args_get(feats_obj, &n);
    if (!fa) return NULL;
    size_t cap = (size_t)(n ? n : 1);
    pe_features *f = PyMem_Calloc(cap, sizeof *f);
    pe_result *res = PyMem_Calloc(cap, sizeof *res);
    int *w = PyMem_Calloc(cap, sizeof *w), *h = PyMem_Calloc(cap, sizeof *h);
    PyObject *out = NULL, *sizes = PySequence_Fast(sizes_obj, "sizes: expects a sequence");
    if (!f || !res || !w || !h) PyErr_NoMemory();
    else if (sizes && PySequence_Fast_GET_SIZE(sizes) != n)
        raise_status(PE_ERR_ARG, "zeroshot_features: one (width, height) per image");
    else if (sizes) {
        int ok = 1;
        for (Py_ssize_t i = 0; i < n && ok; i++) {
            f[i] = fa[i].f;
            ok = PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sizes, i), "ii", &w[i], &h[i]);
        }
        if (ok) {
            call_result r;
            Py_BEGIN_ALLOW_THREADS keep_error(&r, pe_zeroshot_features(f, (int)n, &p, res));
            Py_END_ALLOW_THREADS out =
                r.status ? raise_status(r.status, r.message) : results_list(res, n, w, h);
            for (Py_ssize_t i = 0; !r.status && i < n; i++) pe_result_free(&res[i]);
        }
    }
    Py_XDECREF(sizes);
    PyMem_Free(f);
    PyMem_Free(res);
    PyMem_Free(w);
    PyMem_Free(h);
    features_args_release(fa, n);
    return out;
}

/* ------------------------------------------------------------------ maps, heatmaps */

/* result_map(patch_scores, grid_h, grid_w, width, height, sigma) -> bytearray float32 (H*W) */
static PyObject *py_result_map(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *pobj;
    int gh, gw, w, h;
    float sigma;
    if (!PyArg_ParseTuple(args, "Oiiiif", &pobj, &gh, &gw, &w, &h, &sigma)) return NULL;
    if (gh < 1 || gw < 1 || w < 1 || h < 1 || w > PE_MAX_IMAGE_SIDE || h > PE_MAX_IMAGE_SIDE ||
        (size_t)w * h > PE_MAX_IMAGE_PIXELS)
        return raise_fmt(PE_ERR_SHAPE, "map: grid %dx%d to %dx%d pixels", gw, gh, w, h);
    Py_buffer pv;
    if (get_typed(pobj, 'f', (Py_ssize_t)gh * gw, "patch scores", &pv, 0)) return NULL;
    PyObject *map = bytes_copy(NULL, (size_t)w * h * sizeof(float));
    if (!map) {
        PyBuffer_Release(&pv);
        return NULL;
    }
    float *dst = (float *)PyByteArray_AS_STRING(map);
    call_result r;
    Py_BEGIN_ALLOW_THREADS keep_error(&r, pe_anomaly_map(pv.buf, gh, gw, w, h, sigma, dst));
    Py_END_ALLOW_THREADS PyBuffer_Release(&pv);
    if (r.status) {
        Py_DECREF(map);
        return raise_status(r.status, r.message);
    }
    return map;
}

/* heatmap(image, map, vmin, vmax) -> (bytearray rgb, width, height) of the overlay with
 * its colour bar (what predict writes to heatmaps/<stem>.png). */
static PyObject *py_heatmap(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *src, *mobj;
    float vmin, vmax;
    if (!PyArg_ParseTuple(args, "OOff", &src, &mobj, &vmin, &vmax)) return NULL;
    image_arg a;
    if (image_arg_get(src, &a)) return NULL;
    Py_buffer mv;
    if (get_typed(mobj, 'f', (Py_ssize_t)a.img.width * a.img.height, "map", &mv, 0)) {
        image_arg_release(&a);
        return NULL;
    }
    pe_image out = {0, 0, NULL};
    call_result r;
    Py_BEGIN_ALLOW_THREADS keep_error(&r, pe_heatmap_render(&a.img, mv.buf, vmin, vmax, &out));
    Py_END_ALLOW_THREADS PyBuffer_Release(&mv);
    image_arg_release(&a);
    if (r.status) return raise_status(r.status, r.message);
    PyObject *rgb = bytes_copy(out.rgb, (size_t)out.width * out.height * 3);
    PyObject *res = rgb ? Py_BuildValue("(Nii)", rgb, out.width, out.height) : NULL;
    pe_image_free(&out);
    return res;
}

/* ------------------------------------------------------------------ datasets, metrics */

static PyObject *samples_list(const pe_sample *s, int n)
{
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *t = Py_BuildValue("(NNsi)", PyUnicode_DecodeFSDefault(s[i].path),
                                    s[i].mask_path ? PyUnicode_DecodeFSDefault(s[i].mask_path)
                                                   : (Py_INCREF(Py_None), Py_None),
                                    s[i].defect ? s[i].defect : "", s[i].label);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

/* dataset_open(root, layout or None) -> {"layout", "root", "categories": [{"name", "root",
 * "train": [(path, mask, defect, label)], "test": [...], "has_masks"}]} */
static PyObject *py_dataset_open(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *root_obj;
    const char *layout = NULL;
    if (!PyArg_ParseTuple(args, "O&z", PyUnicode_FSConverter, &root_obj, &layout)) return NULL;
    const char *root = PyBytes_AS_STRING(root_obj);
    pe_dataset *ds = NULL;
    call_result r;
    Py_BEGIN_ALLOW_THREADS keep_error(&r, pe_dataset_open(root, layout, &ds));
    Py_END_ALLOW_THREADS Py_DECREF(root_obj);
    if (r.status) return raise_status(r.status, r.message);
    PyObject *cats = PyList_New(ds->num_categories);
    for (int c = 0; cats && c < ds->num_categories; c++) {
        const pe_category *cat = &ds->categories[c];
        PyObject *d = Py_BuildValue("{s:s,s:N,s:N,s:N,s:O}", "name", cat->name, "root",
                                    PyUnicode_DecodeFSDefault(cat->root), "train",
                                    samples_list(cat->train, cat->num_train), "test",
                                    samples_list(cat->test, cat->num_test), "has_masks",
                                    cat->has_masks ? Py_True : Py_False);
        if (!d) {
            Py_CLEAR(cats);
            break;
        }
        PyList_SET_ITEM(cats, c, d);
    }
    PyObject *out = cats ? Py_BuildValue("{s:s,s:N,s:N}", "layout", ds->layout, "root",
                                         PyUnicode_DecodeFSDefault(ds->root), "categories", cats)
                         : NULL;
    pe_dataset_free(ds);
    return out;
}

/* image_metrics(scores float32, labels uint8) -> dict (AUROC, AP, F1-max) */
static PyObject *py_image_metrics(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *sobj, *lobj;
    if (!PyArg_ParseTuple(args, "OO", &sobj, &lobj)) return NULL;
    Py_buffer sv, lv;
    if (get_typed(sobj, 'f', -1, "scores", &sv, 0)) return NULL;
    if (get_typed(lobj, 'B', sv.len / 4, "labels", &lv, 0)) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    pe_image_metrics m;
    pe_status s = pe_image_metrics_compute(sv.buf, lv.buf, (int)(sv.len / 4), &m);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&lv);
    if (s) return raise_status(s, pe_last_error());
    return Py_BuildValue("{s:d,s:d,s:d,s:d,s:i,s:i}", "auroc", m.auroc, "ap", m.ap, "f1_max",
                         m.f1_max, "f1_threshold", m.f1_threshold, "num_pos", m.num_pos, "num_neg",
                         m.num_neg);
}

/* mask_load(path) -> (bytearray mask, width, height) */
static PyObject *py_mask_load(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *path_obj;
    if (!PyUnicode_FSConverter(arg, &path_obj)) return NULL;
    const char *path = PyBytes_AS_STRING(path_obj);
    int w = 0, h = 0;
    uint8_t *mask = NULL;
    call_result r;
    Py_BEGIN_ALLOW_THREADS keep_error(&r, pe_mask_load(path, &w, &h, &mask));
    Py_END_ALLOW_THREADS Py_DECREF(path_obj);
    if (r.status) return raise_status(r.status, r.message);
    PyObject *b = bytes_copy(mask, (size_t)w * h);
    free(mask);
    return b ? Py_BuildValue("(Nii)", b, w, h) : NULL;
}

/* PixelAcc(lo, hi, bins): streaming pixel AUROC / PRO (pe_pixel_acc). */
typedef struct {
    PyObject_HEAD pe_pixel_acc *acc;
} PixelAccObject;

static int PixelAcc_init(PixelAccObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"lo", "hi", "bins", NULL};
    float lo, hi;
    int bins = PE_PIXEL_BINS_DEFAULT;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ff|i", names, &lo, &hi, &bins)) return -1;
    pe_pixel_acc_free(self->acc);
    self->acc = NULL;
    pe_status s = pe_pixel_acc_create(lo, hi, bins, &self->acc);
    if (s) return raise_status(s, pe_last_error()), -1;
    return 0;
}

static void PixelAcc_dealloc(PixelAccObject *self)
{
    pe_pixel_acc_free(self->acc);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* add(map float32 (H*W), mask uint8 (H*W) or None, width, height) */
static PyObject *PixelAcc_add(PixelAccObject *self, PyObject *args)
{
    PyObject *mobj, *kobj;
    int w, h;
    if (!PyArg_ParseTuple(args, "OOii", &mobj, &kobj, &w, &h)) return NULL;
    if (!self->acc) return PyErr_SetString(PyExc_RuntimeError, "PixelAcc is not initialised"), NULL;
    if (w < 1 || h < 1) return raise_fmt(PE_ERR_SHAPE, "pixel metrics: bad size %dx%d", w, h);
    Py_buffer mv, kv;
    if (get_typed(mobj, 'f', (Py_ssize_t)w * h, "map", &mv, 0)) return NULL;
    int has_mask = kobj != Py_None;
    if (has_mask && get_typed(kobj, 'B', (Py_ssize_t)w * h, "mask", &kv, 0)) {
        PyBuffer_Release(&mv);
        return NULL;
    }
    /* The GIL is kept: it is what serialises calls on one accumulator (eval's helper,
     * linear in the pixels of one map). */
    call_result r;
    keep_error(&r, pe_pixel_acc_add(self->acc, mv.buf, has_mask ? kv.buf : NULL, w, h));
    PyBuffer_Release(&mv);
    if (has_mask) PyBuffer_Release(&kv);
    if (r.status) return raise_status(r.status, r.message);
    Py_RETURN_NONE;
}

static PyObject *PixelAcc_result(PixelAccObject *self, PyObject *args)
{
    double max_fpr = 0.3;
    if (!PyArg_ParseTuple(args, "|d", &max_fpr)) return NULL;
    if (!self->acc) return PyErr_SetString(PyExc_RuntimeError, "PixelAcc is not initialised"), NULL;
    pe_pixel_metrics m;
    pe_status s = pe_pixel_acc_result(self->acc, max_fpr, &m);
    if (s) return raise_status(s, pe_last_error());
    return Py_BuildValue("{s:d,s:d,s:d,s:d,s:d,s:L,s:L,s:L}", "auroc", m.auroc, "auroc_bound",
                         m.auroc_bound, "pro", m.pro, "pro_bound", m.pro_bound, "max_fpr",
                         m.max_fpr, "num_pos", (long long)m.num_pos, "num_neg",
                         (long long)m.num_neg, "num_regions", (long long)m.num_regions);
}

static PyMethodDef PixelAcc_methods[] = {
    {"add", (PyCFunction)PixelAcc_add, METH_VARARGS, "add(map, mask or None, width, height)"},
    {"result", (PyCFunction)PixelAcc_result, METH_VARARGS, "result(max_fpr=0.3) -> dict"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject PixelAccType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "patchead._core.PixelAcc",
    .tp_basicsize = sizeof(PixelAccObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "PixelAcc(lo, hi, bins): streaming pixel AUROC / PRO.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PixelAcc_init,
    .tp_dealloc = (destructor)PixelAcc_dealloc,
    .tp_methods = PixelAcc_methods,
};

/* ------------------------------------------------------------------ threads, module */

static PyObject *py_set_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    pe_set_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_threads(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(pe_get_threads());
}

/* sample_refs(seed, n) -> list: the library's seeded reference order (pe_sample_refs, the
 * rule of `fit --shots N --seed S` and `eval`): its first N entries are the N-shot set. */
static PyObject *py_sample_refs(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long seed;
    int n;
    if (!PyArg_ParseTuple(args, "Ki", &seed, &n)) return NULL;
    if (n < 0) return PyErr_Format(PyExc_ValueError, "sample_refs: n = %d", n);
    int *perm = PyMem_Malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!perm) return PyErr_NoMemory();
    if (n > 0 && pe_sample_refs((uint64_t)seed, n, perm) != PE_OK) {
        PyMem_Free(perm);
        return PyErr_NoMemory();
    }
    PyObject *out = PyList_New(n);
    for (int i = 0; out && i < n; i++) PyList_SET_ITEM(out, i, PyLong_FromLong(perm[i]));
    PyMem_Free(perm);
    return out;
}

static PyMethodDef module_methods[] = {
    {"sample_refs", py_sample_refs, METH_VARARGS, "sample_refs(seed, n) -> permutation list"},
    {"_register_errors", register_errors, METH_O, "error classes, indexed by pe_status"},
    {"load_image", py_load_image, METH_O, "load_image(src) -> (rgb, width, height)"},
    {"bank_fit", py_bank_fit, METH_VARARGS, "bank_fit(model, images, names, params) -> Bank"},
    {"bank_fit_features", py_bank_fit_features, METH_VARARGS,
     "bank_fit_features(model, features, params) -> Bank"},
    {"bank_load", py_bank_load, METH_VARARGS, "bank_load(path, model or None) -> Bank"},
    {"zeroshot", py_zeroshot, METH_VARARGS, "zeroshot(model, images, params) -> [result]"},
    {"zeroshot_features", py_zeroshot_features, METH_VARARGS,
     "zeroshot_features(features, sizes, params) -> [result]"},
    {"result_map", py_result_map, METH_VARARGS,
     "result_map(patch_scores, grid_h, grid_w, width, height, sigma) -> float32 bytes"},
    {"heatmap", py_heatmap, METH_VARARGS, "heatmap(image, map, vmin, vmax) -> (rgb, w, h)"},
    {"dataset_open", py_dataset_open, METH_VARARGS, "dataset_open(root, layout) -> dict"},
    {"image_metrics", py_image_metrics, METH_VARARGS, "image_metrics(scores, labels) -> dict"},
    {"mask_load", py_mask_load, METH_O, "mask_load(path) -> (mask, width, height)"},
    {"set_threads", py_set_threads, METH_O, "set_threads(n): n <= 0 = all cores"},
    {"get_threads", py_get_threads, METH_NOARGS, "get_threads() -> int"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT,
                                        "patchead._core",
                                        "C layer of the patchead package (see __init__.py).",
                                        -1,
                                        module_methods,
                                        NULL,
                                        NULL,
                                        NULL,
                                        NULL};

PyMODINIT_FUNC PyInit__core(void)
{
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&BankType) < 0 ||
        PyType_Ready(&PixelAccType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    Py_INCREF(&ModelType);
    Py_INCREF(&BankType);
    Py_INCREF(&PixelAccType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&ModelType) ||
        PyModule_AddObject(m, "Bank", (PyObject *)&BankType) ||
        PyModule_AddObject(m, "PixelAcc", (PyObject *)&PixelAccType) ||
        PyModule_AddStringConstant(m, "version", PE_VERSION) ||
        PyModule_AddIntConstant(m, "MAX_IMAGE_SIDE", PE_MAX_IMAGE_SIDE) ||
        PyModule_AddIntConstant(m, "MAX_IMAGE_PIXELS", (long)PE_MAX_IMAGE_PIXELS)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
