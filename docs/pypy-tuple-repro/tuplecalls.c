/* Calls a Python function n times from C, with or without a 1-tuple of
 * arguments made here, and reports this process's RSS (KiB) right after the
 * loop, before any more Python code runs. */
#include <Python.h>
#include <stdio.h>

static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * 4;
}

static PyObject *call_many(PyObject *self, PyObject *args) {
    PyObject *func, *arg;
    long n, with_tuple;
    if (!PyArg_ParseTuple(args, "OOll", &func, &arg, &n, &with_tuple)) return NULL;
    for (long i = 0; i < n; i++) {
        PyObject *result;
        if (with_tuple) {
            PyObject *tuple = PyTuple_New(1);
            if (!tuple) return NULL;
            Py_INCREF(arg);
            PyTuple_SET_ITEM(tuple, 0, arg);
            result = PyObject_Call(func, tuple, NULL);
            Py_DECREF(tuple);
        } else {
            result = PyObject_CallObject(func, NULL);
        }
        if (!result) return NULL;
        Py_DECREF(result);
    }
    return PyLong_FromLong(rss_kib());
}

static PyMethodDef methods[] = {
    {"call_many", call_many, METH_VARARGS, "call_many(func, arg, n, with_tuple) -> RSS KiB"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tuplecalls", NULL, -1, methods};

PyMODINIT_FUNC PyInit_tuplecalls(void) { return PyModule_Create(&module); }
