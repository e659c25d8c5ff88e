/*
 * The native fast path of rnnkit.data.ctf: scan a block of whole CTF lines in one pass.
 *
 * scan() reads what the Python fast path (CTFReader._fast_block) reads and gives up, by
 * returning None, wherever that path gives up: anything it cannot vouch for (comments
 * excepted) goes back to the plain Python scanner, which reads it exactly and locates errors.
 * It never raises on bad input. Numbers follow the CTF grammar
 * [+-](digits[.digits] | .digits)[(e|E)[+-]digits]; they are converted to the nearest double
 * (as Python's float() does: exactly with Clinger's fast path when the decimal mantissa is
 * below 2**53 and the power of ten at most 22, otherwise with strtod) and rounded to float32.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STREAMS 64

typedef struct {
    char *data;
    size_t len; /* bytes used */
    size_t cap;
} Buffer;

static int buffer_reserve(Buffer *b, size_t extra) {
    if (b->len + extra <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (data == NULL) {
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buffer_put(Buffer *b, const void *item, size_t size) {
    if (buffer_reserve(b, size) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, item, size);
    b->len += size;
    return 0;
}

typedef struct {
    const char *name;
    Py_ssize_t name_len;
    long long dim;
    int sparse;
    Buffer values; /* dense: float32 values; sparse: float32 values of the pairs */
    Buffer owners; /* sparse: int64 row of each pair */
    Buffer cols;   /* sparse: int64 column of each pair */
    int64_t rows;  /* samples so far */
} StreamScan;

typedef enum { SCAN_OK = 0, SCAN_GIVE_UP = 1, SCAN_NO_MEMORY = 2 } ScanStatus;

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static inline int is_space(char c) { return c == ' ' || c == '\t'; }

static inline int is_digit(char c) { return (unsigned char)(c - '0') < 10; }

/* The number starting at p, which must end at `end` or at a space or tab before it: the
 * pointer past it and *out, or NULL when the token is not a CTF number. */
static const char *parse_number(const char *p, const char *end, double *out) {
    const char *start = p;
    int negative = 0;
    if (p < end && (*p == '+' || *p == '-')) {
        negative = *p == '-';
        p++;
    }
    uint64_t mantissa = 0; /* exact while there are at most 19 digits */
    const char *digits = p;
    while (p < end && is_digit(*p)) {
        mantissa = mantissa * 10 + (uint64_t)(*p - '0');
        p++;
    }
    Py_ssize_t int_digits = p - digits, frac_digits = 0;
    if (p < end && *p == '.') {
        const char *frac = ++p;
        while (p < end && is_digit(*p)) {
            mantissa = mantissa * 10 + (uint64_t)(*p - '0');
            p++;
        }
        frac_digits = p - frac;
    }
    if (int_digits + frac_digits == 0) {
        return NULL;
    }
    long exponent = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int exp_negative = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            exp_negative = *p == '-';
            p++;
        }
        if (p == end || !is_digit(*p)) {
            return NULL;
        }
        while (p < end && is_digit(*p)) {
            if (exponent < 100000) {
                exponent = exponent * 10 + (*p - '0');
            }
            p++;
        }
        if (exp_negative) {
            exponent = -exponent;
        }
    }
    if (p != end && !is_space(*p)) {
        return NULL;
    }
    /* Clinger's fast path: an exact mantissa (< 2**53) times or over an exact power of ten
     * (<= 1e22) is one correctly rounded operation. */
    long power = exponent - (long)frac_digits;
    if (int_digits + frac_digits <= 19 && mantissa <= ((uint64_t)1 << 53) && power >= -22 &&
        power <= 22) {
        double value = (double)mantissa;
        value = power < 0 ? value / POW10[-power] : value * POW10[power];
        *out = negative ? -value : value;
        return p;
    }
    char local[128];
    size_t n = (size_t)(p - start);
    if (n >= sizeof local) {
        return NULL;
    }
    memcpy(local, start, n);
    local[n] = '\0';
    char *stop = NULL;
    double value = strtod(local, &stop);
    if (stop != local + n) {
        return NULL; /* a locale whose decimal point is not '.' */
    }
    *out = value;
    return p;
}

/* The value of an id token of digits (leading zeros allowed) below 2**64, or -1. */
static int parse_id(const char *p, const char *end, uint64_t *out) {
    if (p == end) {
        return -1;
    }
    uint64_t value = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        uint64_t digit = (uint64_t)(*p - '0');
        if (value > (UINT64_MAX - digit) / 10) {
            return -1;
        }
        value = value * 10 + digit;
    }
    *out = value;
    return 0;
}

typedef struct {
    int ids;           /* -1: not known yet, 0: no ids, 1: ids */
    int have_cur;      /* whether cur_id holds the open sequence's id */
    uint64_t cur_id;
    int continues;     /* whether the first piece continues the open sequence */
    Py_ssize_t lines;  /* lines read */
    Buffer starts;     /* int64 [pieces, streams]: each stream's row count where a piece starts */
    Buffer new_ids;    /* uint64 ids opened in this block */
} Scan;

static ScanStatus put_start(Scan *s, StreamScan *streams, int nstreams) {
    for (int k = 0; k < nstreams; k++) {
        if (buffer_put(&s->starts, &streams[k].rows, sizeof(int64_t)) < 0) {
            return SCAN_NO_MEMORY;
        }
    }
    return SCAN_OK;
}

static ScanStatus scan_field(StreamScan *st, const char *p, const char *end) {
    float value32;
    double value;
    if (!st->sparse) {
        /* Values are at least one character and a separator apart: a field too short for dim
         * of them is malformed (and dim may be far too large to reserve room for). */
        if (st->dim > (end - p + 1) / 2) {
            return SCAN_GIVE_UP;
        }
        if (buffer_reserve(&st->values, (size_t)st->dim * sizeof(float)) < 0) {
            return SCAN_NO_MEMORY;
        }
        float *out = (float *)(st->values.data + st->values.len);
        long long count = 0;
        while (p < end) {
            while (p < end && is_space(*p)) {
                p++;
            }
            if (p == end) {
                break;
            }
            if (count == st->dim || (p = parse_number(p, end, &value)) == NULL) {
                return SCAN_GIVE_UP;
            }
            out[count++] = (float)value;
        }
        if (count != st->dim) {
            return SCAN_GIVE_UP;
        }
        st->values.len += (size_t)st->dim * sizeof(float);
    } else {
        while (p < end) {
            while (p < end && is_space(*p)) {
                p++;
            }
            if (p == end) {
                break;
            }
            const char *token = p;
            while (p < end && !is_space(*p) && *p != ':') {
                p++;
            }
            const char *significant = token; /* past leading zeros, as in ids: 007 is 7 */
            while (significant + 1 < p && *significant == '0') {
                significant++;
            }
            if (p == token || p == end || *p != ':' || p - significant > 18) {
                return SCAN_GIVE_UP;
            }
            int64_t col = 0;
            for (const char *q = token; q < p; q++) {
                if (*q < '0' || *q > '9') {
                    return SCAN_GIVE_UP;
                }
                col = col * 10 + (*q - '0');
            }
            if (col >= st->dim) {
                return SCAN_GIVE_UP;
            }
            if ((p = parse_number(p + 1, end, &value)) == NULL) {
                return SCAN_GIVE_UP;
            }
            value32 = (float)value;
            if (buffer_put(&st->values, &value32, sizeof value32) < 0 ||
                buffer_put(&st->owners, &st->rows, sizeof(int64_t)) < 0 ||
                buffer_put(&st->cols, &col, sizeof col) < 0) {
                return SCAN_NO_MEMORY;
            }
        }
    }
    st->rows++;
    return SCAN_OK;
}

static ScanStatus scan_line(Scan *s, StreamScan *streams, int nstreams, const char *line,
                            const char *end, int first) {
    const char *bar = memchr(line, '|', (size_t)(end - line));
    if (bar == NULL) {
        return SCAN_GIVE_UP;
    }
    const char *head = line, *head_end = bar;
    while (head < head_end && is_space(*head)) {
        head++;
    }
    while (head_end > head && is_space(head_end[-1])) {
        head_end--;
    }
    int has_head = head < head_end;
    if (s->ids < 0) {
        s->ids = has_head;
    }
    int opens = 0;
    uint64_t id = 0;
    if (has_head && parse_id(head, head_end, &id) < 0) {
        return SCAN_GIVE_UP;
    }
    if (s->ids) {
        if (has_head && !(s->have_cur && id == s->cur_id)) {
            s->cur_id = id;
            s->have_cur = 1;
            if (buffer_put(&s->new_ids, &id, sizeof id) < 0) {
                return SCAN_NO_MEMORY;
            }
            opens = 1;
        }
    } else {
        opens = 1;
    }
    if (opens) {
        if (first) {
            s->continues = 0;
        } else if (put_start(s, streams, nstreams) != SCAN_OK) {
            return SCAN_NO_MEMORY;
        }
    }
    uint64_t mask = 0;
    const char *p = bar;
    while (p < end) {
        const char *field = p + 1;
        const char *field_end = memchr(field, '|', (size_t)(end - field));
        if (field_end == NULL) {
            field_end = end;
        }
        p = field_end;
        if (field == field_end || is_space(*field)) {
            return SCAN_GIVE_UP;
        }
        if (*field == '#') {
            if (memchr(field, '\r', (size_t)(field_end - field)) != NULL) {
                return SCAN_GIVE_UP; /* a lone carriage return */
            }
            continue;
        }
        const char *name_end = field;
        while (name_end < field_end && !is_space(*name_end)) {
            name_end++;
        }
        Py_ssize_t name_len = name_end - field;
        int k = 0;
        while (k < nstreams && !(streams[k].name_len == name_len &&
                                 memcmp(streams[k].name, field, (size_t)name_len) == 0)) {
            k++;
        }
        if (k == nstreams || (mask >> k & 1)) {
            return SCAN_GIVE_UP;
        }
        mask |= (uint64_t)1 << k;
        ScanStatus status = scan_field(&streams[k], name_end, field_end);
        if (status != SCAN_OK) {
            return status;
        }
    }
    return mask ? SCAN_OK : SCAN_GIVE_UP;
}

static ScanStatus scan_block(Scan *s, StreamScan *streams, int nstreams, const char *data,
                             Py_ssize_t size) {
    const char *p = data, *end = data + size;
    int first = 1;
    while (p < end) {
        const char *line = p;
        p = memchr(p, '\n', (size_t)(end - p));
        if (p == NULL) {
            return SCAN_GIVE_UP; /* blocks hold whole lines */
        }
        const char *line_end = p++;
        if (line_end > line && line_end[-1] == '\r') {
            line_end--;
        }
        s->lines++;
        ScanStatus status = scan_line(s, streams, nstreams, line, line_end, first);
        if (status != SCAN_OK) {
            return status;
        }
        first = 0;
    }
    return SCAN_OK;
}

static PyObject *to_bytearray(const Buffer *b) {
    return PyByteArray_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

static PyObject *ctfscan_scan(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    PyObject *specs, *cur;
    int ids;
    if (!PyArg_ParseTuple(args, "y*O!iO", &data, &PyTuple_Type, &specs, &ids, &cur)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t nstreams = PyTuple_GET_SIZE(specs);
    StreamScan streams[MAX_STREAMS];
    memset(streams, 0, sizeof streams);
    Scan s;
    memset(&s, 0, sizeof s);
    s.ids = ids;
    s.continues = 1;
    if (nstreams < 1 || nstreams > MAX_STREAMS) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    for (Py_ssize_t k = 0; k < nstreams; k++) {
        PyObject *spec = PyTuple_GET_ITEM(specs, k);
        const char *name;
        Py_ssize_t name_len;
        PyObject *dim_object;
        int sparse, overflow;
        if (!PyArg_ParseTuple(spec, "y#O!p", &name, &name_len, &PyLong_Type, &dim_object,
                              &sparse)) {
            goto done;
        }
        long long dim = PyLong_AsLongLongAndOverflow(dim_object, &overflow);
        if (dim == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (overflow || dim < 1) { /* beyond long long: the plain path reads the block */
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        streams[k].name = name;
        streams[k].name_len = name_len;
        streams[k].dim = dim;
        streams[k].sparse = sparse;
    }
    if (cur != Py_None) {
        s.cur_id = PyLong_AsUnsignedLongLong(cur);
        if (PyErr_Occurred()) {
            goto done;
        }
        s.have_cur = 1;
    }
    ScanStatus status;
    Py_BEGIN_ALLOW_THREADS;
    status = put_start(&s, streams, (int)nstreams);
    if (status == SCAN_OK) {
        status = scan_block(&s, streams, (int)nstreams, data.buf, data.len);
    }
    Py_END_ALLOW_THREADS;
    if (status == SCAN_NO_MEMORY) {
        PyErr_NoMemory();
        goto done;
    }
    if (status == SCAN_GIVE_UP) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    PyObject *values = PyList_New(nstreams);
    if (values == NULL) {
        goto done;
    }
    for (Py_ssize_t k = 0; k < nstreams; k++) {
        StreamScan *st = &streams[k];
        PyObject *item = st->sparse ? Py_BuildValue("(LNNN)", (long long)st->rows,
                                                    to_bytearray(&st->owners),
                                                    to_bytearray(&st->cols),
                                                    to_bytearray(&st->values))
                                    : to_bytearray(&st->values);
        if (item == NULL) {
            Py_DECREF(values);
            goto done;
        }
        PyList_SET_ITEM(values, k, item);
    }
    PyObject *cur_out = s.have_cur ? PyLong_FromUnsignedLongLong(s.cur_id) : Py_NewRef(Py_None);
    result = Py_BuildValue("(NNNiNNn)", values, to_bytearray(&s.starts),
                           PyBool_FromLong(s.continues), s.ids, cur_out,
                           to_bytearray(&s.new_ids), s.lines);
done:
    for (Py_ssize_t k = 0; k < nstreams && k < MAX_STREAMS; k++) {
        free(streams[k].values.data);
        free(streams[k].owners.data);
        free(streams[k].cols.data);
    }
    free(s.starts.data);
    free(s.new_ids.data);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef ctfscan_methods[] = {
    {"scan", ctfscan_scan, METH_VARARGS,
     "scan(data, specs, ids, cur_id) -> (values, starts, continues, ids, cur_id, new_ids, "
     "lines) or None\n\nRead a block of whole CTF lines (bytes). specs: one (field: bytes, dim, sparse) per "
     "stream; ids: -1 unknown, 0 no ids, 1 ids; cur_id: the open sequence's id or None. "
     "values[k] is a bytearray of float32 (dense) or (rows, owners int64, cols int64, values "
     "float32) (sparse); starts is int64 [pieces, streams]; new_ids uint64; lines: how many were read. None: the block "
     "needs the plain reader."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ctfscan_module = {
    PyModuleDef_HEAD_INIT, "_ctfscan",
    "The native fast path of rnnkit.data.ctf (see scan).", -1, ctfscan_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ctfscan(void) { return PyModule_Create(&ctfscan_module); }
