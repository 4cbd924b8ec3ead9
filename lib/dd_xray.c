/* SPDX-License-Identifier: Apache-2.0 */
/* dd_xray.c - AWS X-Ray trace ids, the X-Amzn-Trace-Id header, and segment documents.
 *
 * The header parser reads attacker-controlled bytes: it works on slices of the value, never
 * writes into it, and decides everything before it fills the caller's struct. It is strict
 * where a lenient reading could join two contexts into one (a repeated key, a ','), and
 * lenient where the SDKs are (blanks, key case, unknown fields).
 *
 * Segment documents are built with jansson (the project writes all its JSON with it: escaping
 * and UTF-8 are its job, not ours) and dumped compact, in X-Ray's field order, straight into a
 * buffer that already holds the daemon header. Every string is made valid UTF-8 and cut to the
 * 250 characters X-Ray allows before it goes in, so a document has a known bound and a whole
 * segment with DD_XRAY_MAX_SUBSEGMENTS subsegments stays near the datagram limit; past it, the
 * subsegments are sent as documents of their own, as the SDKs stream them.
 */
#include "dd_xray.h"

#include <locale.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include <apr_strings.h>
#include <jansson.h>

#include "dd_util.h"

/* ---- trace ids ------------------------------------------------------------------------- */

void dd_xray_trace_id_format(uint64_t hi, uint64_t lo, char out[36])
{
    char h[17], l[17];
    dd_u64_to_hex16(hi, h);
    dd_u64_to_hex16(lo, l);
    out[0] = '1';
    out[1] = '-';
    memcpy(out + 2, h, 8);
    out[10] = '-';
    memcpy(out + 11, h + 8, 8);
    memcpy(out + 19, l, 16);
    out[35] = '\0';
}

int dd_xray_trace_id_parse(const char *s, size_t n, uint64_t *hi, uint64_t *lo)
{
    uint64_t a, b, c;
    if (n != 35 || s[0] != '1' || s[1] != '-' || s[10] != '-')
        return 0;
    if (!dd_parse_u64_hex(s + 2, 8, &a) || !dd_parse_u64_hex(s + 11, 8, &b) ||
        !dd_parse_u64_hex(s + 19, 16, &c) || c == 0)
        return 0;
    *hi = (a << 32) | b;
    *lo = c;
    return 1;
}

#define XRAY_MAX_AGE_S (28 * 86400) /* the OpenTelemetry exporter's check (X-Ray: 30 days) */
#define XRAY_MAX_AHEAD_S 300

void dd_xray_trace_id_for(uint64_t hi, uint64_t lo, int64_t start_s, uint64_t *xhi, uint64_t *xlo)
{
    int64_t t = (int64_t)(hi >> 32);
    if (hi != 0 && t >= start_s - XRAY_MAX_AGE_S && t <= start_s + XRAY_MAX_AHEAD_S) {
        *xhi = hi;
    } else {
        *xhi = (uint64_t)(uint32_t)start_s << 32;
    }
    *xlo = lo;
}

/* ---- X-Amzn-Trace-Id ------------------------------------------------------------------- */

static int ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ows((*s)[*n - 1]))
        (*n)--;
}

static int key_is(const char *k, size_t kn, const char *lit)
{
    size_t i = 0;
    for (; i < kn; i++) {
        char c = k[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (lit[i] == '\0' || c != lit[i])
            return 0;
    }
    return lit[i] == '\0';
}

/* A field we may re-send: key of [A-Za-z0-9_.-], value of printable ASCII without blanks,
 * ';' or ','. */
static int token_key(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int token_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == ';' || c == ',')
            return 0;
    }
    return 1;
}

int dd_xray_header_parse(apr_pool_t *p, const char *value, dd_xray_header_t *out)
{
    dd_xray_header_t h;
    int have_root = 0, have_parent = 0, have_sampled = 0;
    char extra[DD_XRAY_MAX_EXTRA_BYTES + 1];
    size_t extra_len = 0, n;

    memset(out, 0, sizeof(*out));
    if (!value || strchr(value, ','))
        return 0;
    memset(&h, 0, sizeof(h));
    n = strlen(value);
    for (size_t pos = 0; pos <= n;) {
        const char *f = value + pos, *semi = memchr(f, ';', n - pos);
        size_t fn = semi ? (size_t)(semi - f) : n - pos;
        const char *eq, *k, *v;
        size_t kn, vn;

        pos += fn + 1;
        trim(&f, &fn);
        eq = memchr(f, '=', fn);
        if (!eq)
            continue; /* an empty field, or a bare word: nothing the SDKs read either */
        k = f;
        kn = (size_t)(eq - f);
        v = eq + 1;
        vn = fn - kn - 1;
        trim(&k, &kn);
        trim(&v, &vn);
        if (key_is(k, kn, "root")) {
            if (have_root++ || !dd_xray_trace_id_parse(v, vn, &h.root_hi, &h.root_lo))
                return 0;
            h.has_root = 1;
        } else if (key_is(k, kn, "parent")) {
            if (have_parent++ || vn != 16 || !dd_parse_u64_hex(v, 16, &h.parent) || h.parent == 0)
                return 0;
        } else if (key_is(k, kn, "sampled")) {
            if (have_sampled++)
                return 0;
            if (vn == 1 && v[0] == '1')
                h.sampled = DD_XRAY_SAMPLED_YES;
            else if (vn == 1 && v[0] == '0')
                h.sampled = DD_XRAY_SAMPLED_NO;
            else if (vn == 1 && v[0] == '?')
                h.sampled = DD_XRAY_SAMPLED_ASK;
        } else if (key_is(k, kn, "self")) {
            /* an ALB's record of its own hop: not ours to forward */
        } else if (token_key(k, kn) && token_value(v, vn)) {
            size_t need = (extra_len ? 1 : 0) + kn + 1 + vn;
            if (extra_len + need <= DD_XRAY_MAX_EXTRA_BYTES) {
                if (extra_len)
                    extra[extra_len++] = ';';
                memcpy(extra + extra_len, k, kn);
                extra_len += kn;
                extra[extra_len++] = '=';
                memcpy(extra + extra_len, v, vn);
                extra_len += vn;
            }
        }
    }
    if (h.parent && !h.has_root)
        return 0; /* a parent in no known trace */
    if (extra_len)
        h.extra = apr_pstrmemdup(p, extra, extra_len);
    *out = h;
    return 1;
}

const char *dd_xray_header_format(apr_pool_t *p, uint64_t hi, uint64_t lo, uint64_t parent,
                                  int sampled, const char *extra)
{
    char root[36], par[17];
    dd_xray_trace_id_format(hi, lo, root);
    dd_u64_to_hex16(parent, par);
    return apr_pstrcat(p, "Root=", root, ";Parent=", par, sampled ? ";Sampled=1" : ";Sampled=0",
                       extra && *extra ? ";" : "", extra && *extra ? extra : "", NULL);
}

const char *dd_xray_response_header(apr_pool_t *p, uint64_t hi, uint64_t lo, int sampled)
{
    char root[36];
    dd_xray_trace_id_format(hi, lo, root);
    return apr_pstrcat(p, "Root=", root, sampled ? ";Sampled=1" : ";Sampled=0", NULL);
}

/* ---- names and values ------------------------------------------------------------------- */

/* Length of the UTF-8 sequence at s (valid UTF-8 assumed) and its code point. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (s[0] < 0xF0) {
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;
static locale_t utf8_locale;

static void utf8_locale_init(void)
{
    utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

static int name_char_ok(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
               cp == ' ' || strchr("_.:/%&#=+-@", (int)cp) != NULL;
    pthread_once(&utf8_once, utf8_locale_init);
    if (utf8_locale == (locale_t)0)
        return 0;
    return iswalnum_l((wint_t)cp, utf8_locale) || iswspace_l((wint_t)cp, utf8_locale);
}

const char *dd_xray_name_clean(apr_pool_t *p, const char *s, int *changed)
{
    const unsigned char *u;
    char *out;
    size_t o = 0, chars = 0;
    int cut = 0;

    if (!s)
        return NULL;
    u = (const unsigned char *)dd_str_clean(p, s, strlen(s), strlen(s) * 3, &cut);
    out = apr_palloc(p, strlen((const char *)u) + 1);
    for (size_t i = 0; u[i];) {
        uint32_t cp;
        size_t len = utf8_next(u + i, &cp);
        if (!name_char_ok(cp) || (cp == 0xFFFD && (const char *)u != s)) {
            cut = 1;
        } else if (chars == DD_XRAY_MAX_NAME_CHARS) {
            cut = 1;
            break;
        } else {
            memcpy(out + o, u + i, len);
            o += len;
            chars++;
        }
        i += len;
    }
    out[o] = '\0';
    if (changed)
        *changed = cut || (const char *)u != s;
    return o ? out : NULL;
}

const char *dd_xray_value(apr_pool_t *p, const char *s, size_t max_chars)
{
    const unsigned char *u;
    size_t chars = 0, i = 0, len;

    if (!s)
        return NULL;
    len = strlen(s);
    u = (const unsigned char *)dd_str_clean(p, s, len, max_chars * 4, NULL);
    while (u[i] && chars < max_chars) {
        uint32_t cp;
        i += utf8_next(u + i, &cp);
        chars++;
    }
    if (!u[i])
        return (const char *)u;
    return apr_pstrmemdup(p, (const char *)u, i);
}

/* ---- origin ----------------------------------------------------------------------------- */

/* The first line of a small file, or NULL. */
static char *first_line(apr_pool_t *p, const char *sysroot, const char *path)
{
    char buf[128];
    FILE *f = fopen(apr_pstrcat(p, sysroot, path, NULL), "re");
    size_t n;
    if (!f)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return apr_pstrdup(p, buf);
}

static int file_exists(apr_pool_t *p, const char *sysroot, const char *path)
{
    FILE *f = fopen(apr_pstrcat(p, sysroot, path, NULL), "re");
    if (!f)
        return 0;
    fclose(f);
    return 1;
}

const char *dd_xray_origin_detect(apr_pool_t *p, const char *sysroot, const char **ec2_instance_id)
{
    const char *v;
    char *tag, *vendor;
    *ec2_instance_id = NULL;
    if (file_exists(p, sysroot, "/var/elasticbeanstalk/xray/environment.conf"))
        return "AWS::ElasticBeanstalk::Environment";
    if (((v = getenv("ECS_CONTAINER_METADATA_URI_V4")) && *v) ||
        ((v = getenv("ECS_CONTAINER_METADATA_URI")) && *v))
        return "AWS::ECS::Container";
    tag = first_line(p, sysroot, "/sys/devices/virtual/dmi/id/board_asset_tag");
    if (tag && strncmp(tag, "i-", 2) == 0 && strlen(tag) <= 19 && strlen(tag) >= 10 &&
        strspn(tag + 2, "0123456789abcdef") == strlen(tag) - 2) {
        *ec2_instance_id = tag;
        return "AWS::EC2::Instance";
    }
    vendor = first_line(p, sysroot, "/sys/devices/virtual/dmi/id/sys_vendor");
    if (vendor && strcmp(vendor, "Amazon EC2") == 0)
        return "AWS::EC2::Instance";
    return NULL;
}

/* ---- segment documents ------------------------------------------------------------------ */

/* A clean string: valid UTF-8 (from dd_xray_value), so jansson need not check it again. */
static json_t *jstr(apr_pool_t *p, const char *s)
{
    const char *v = dd_xray_value(p, s, DD_XRAY_MAX_VALUE_CHARS);
    return json_stringn_nocheck(v, strlen(v));
}

static int put(json_t *o, const char *key, json_t *v)
{
    return v ? json_object_set_new_nocheck(o, key, v) : -1;
}

static json_t *hex16(uint64_t v)
{
    char h[17];
    dd_u64_to_hex16(v, h);
    return json_stringn_nocheck(h, 16);
}

static json_t *dec(uint64_t v)
{
    char tmp[21], *d = tmp + sizeof(tmp);
    *--d = '\0';
    do {
        *--d = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return json_string_nocheck(d);
}

static json_t *seconds(int64_t us)
{
    return json_real((double)us / 1e6);
}

/* error (4xx), throttle (429), fault (5xx), as the SDKs set them from the status. */
static int put_flags(json_t *o, int status, int failed)
{
    int bad = 0;
    if (status >= 400 && status <= 499)
        bad |= put(o, "error", json_true());
    if (status == 429)
        bad |= put(o, "throttle", json_true());
    if ((status >= 500 && status <= 599) || failed)
        bad |= put(o, "fault", json_true());
    return bad;
}

static json_t *http_block(apr_pool_t *p, const char *method, const char *url, const char *ua,
                          const char *client_ip, int xff, int status, int64_t content_length)
{
    json_t *http = json_object(), *req = json_object(), *res = json_object();
    int bad = !http || !req || !res;

    if (!bad && method)
        bad |= put(req, "method", jstr(p, method));
    if (!bad && url)
        bad |= put(req, "url", jstr(p, url));
    if (!bad && ua)
        bad |= put(req, "user_agent", jstr(p, ua));
    if (!bad && client_ip)
        bad |= put(req, "client_ip", jstr(p, client_ip));
    if (!bad && xff)
        bad |= put(req, "x_forwarded_for", json_true());
    if (!bad && status > 0)
        bad |= put(res, "status", json_integer(status));
    if (!bad && content_length >= 0)
        bad |= put(res, "content_length", json_integer((json_int_t)content_length));
    if (!bad)
        bad |= json_object_set_nocheck(http, "request", req);
    if (!bad && json_object_size(res) > 0)
        bad |= json_object_set_nocheck(http, "response", res);
    json_decref(req);
    json_decref(res);
    if (bad) {
        json_decref(http);
        return NULL;
    }
    return http;
}

/* standalone: a document of its own (type, trace_id and parent_id, as the SDKs stream). */
static json_t *subsegment_json(apr_pool_t *p, const dd_xray_segment_t *seg,
                               const dd_xray_subsegment_t *sub, int standalone)
{
    json_t *o = json_object();
    int bad = !o;

    if (!bad && standalone) {
        char tid[36];
        dd_xray_trace_id_format(seg->trace_hi, seg->trace_lo, tid);
        bad |= put(o, "type", json_string_nocheck("subsegment"));
        bad |= put(o, "trace_id", json_stringn_nocheck(tid, 35));
        bad |= put(o, "parent_id", hex16(seg->id));
    }
    if (!bad) {
        bad |= put(o, "id", hex16(sub->id));
        bad |= put(o, "name", jstr(p, sub->name && *sub->name ? sub->name : "remote"));
        bad |= put(o, "start_time", seconds(sub->start_us));
        bad |=
            put(o, "end_time", seconds(sub->end_us >= sub->start_us ? sub->end_us : sub->start_us));
        bad |= put(o, "namespace", json_string_nocheck("remote"));
        bad |= put(
            o, "http",
            http_block(p, sub->method, sub->url, NULL, NULL, 0, sub->status, sub->content_length));
        bad |= put_flags(o, sub->status, sub->failed);
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *segment_json(apr_pool_t *p, const dd_xray_segment_t *seg, int with_subsegments)
{
    json_t *o = json_object(), *aws = NULL, *xray = NULL, *ann = NULL, *meta = NULL;
    char tid[36];
    int bad = !o;

    dd_xray_trace_id_format(seg->trace_hi, seg->trace_lo, tid);
    if (!bad) {
        bad |= put(o, "name", jstr(p, seg->name && *seg->name ? seg->name : "httpd"));
        bad |= put(o, "id", hex16(seg->id));
        bad |= put(o, "trace_id", json_stringn_nocheck(tid, 35));
        if (seg->parent_id)
            bad |= put(o, "parent_id", hex16(seg->parent_id));
        bad |= put(o, "start_time", seconds(seg->start_us));
        bad |=
            put(o, "end_time", seconds(seg->end_us >= seg->start_us ? seg->end_us : seg->start_us));
        if (seg->origin)
            bad |= put(o, "origin", jstr(p, seg->origin));
        bad |= put(o, "http",
                   http_block(p, seg->method, seg->url, seg->user_agent, seg->client_ip,
                              seg->x_forwarded_for, seg->status, seg->content_length));
        bad |= put_flags(o, seg->status, 0);
    }
    if (!bad) {
        aws = json_object();
        xray = json_object();
        bad |= !aws || !xray;
        if (!bad) {
            bad |= put(xray, "sdk", json_string_nocheck("mod_dd_proxy"));
            bad |= put(xray, "sdk_version", jstr(p, seg->sdk_version ? seg->sdk_version : "0"));
            if (seg->rule_name)
                bad |= put(xray, "rule_name", jstr(p, seg->rule_name));
            bad |= json_object_set_nocheck(aws, "xray", xray);
        }
        if (!bad && seg->ec2_instance_id) {
            json_t *ec2 = json_object();
            bad |= !ec2 || put(ec2, "instance_id", jstr(p, seg->ec2_instance_id));
            bad |= put(aws, "ec2", ec2);
        }
        bad |= aws ? json_object_set_nocheck(o, "aws", aws) : 0;
    }
    if (!bad && seg->service_version) {
        json_t *svc = json_object();
        bad |= !svc || put(svc, "version", jstr(p, seg->service_version));
        bad |= put(o, "service", svc);
    }
    if (!bad && seg->dd_trace_id) {
        ann = json_object();
        bad |= !ann;
        if (!bad) {
            bad |= put(ann, "dd_trace_id", jstr(p, seg->dd_trace_id));
            bad |= put(ann, "dd_trace_id_64", dec(seg->dd_trace_id_low));
            bad |= put(ann, "dd_span_id", dec(seg->dd_span_id));
            bad |= json_object_set_nocheck(o, "annotations", ann);
        }
        meta = json_object();
        bad |= !meta;
        if (!bad) {
            json_t *dd = json_object(), *tr = json_object();
            bad |= !dd || !tr;
            if (!bad) {
                bad |= put(tr, "trace-id", dec(seg->dd_trace_id_low));
                bad |= put(tr, "parent-id", dec(seg->dd_span_id));
                if (seg->dd_priority > -100)
                    bad |= put(tr, "sampling-priority",
                               json_string_nocheck(apr_itoa(p, seg->dd_priority)));
                bad |= json_object_set_nocheck(dd, "trace", tr);
                bad |= json_object_set_nocheck(meta, "datadog", dd);
            }
            json_decref(tr);
            json_decref(dd);
            bad |= json_object_set_nocheck(o, "metadata", meta);
        }
    }
    if (!bad && with_subsegments && seg->nsubsegments > 0) {
        json_t *subs = json_array();
        bad |= !subs;
        for (size_t i = 0; !bad && i < seg->nsubsegments; i++)
            bad |= json_array_append_new(subs, subsegment_json(p, seg, &seg->subsegments[i], 0));
        bad |= put(o, "subsegments", subs);
    }
    json_decref(aws);
    json_decref(xray);
    json_decref(ann);
    json_decref(meta);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* A buffer that starts with the daemon header; jansson appends the document to it. */
typedef struct {
    char *buf;
    size_t len, cap, limit;
    int over; /* passed limit: the rest is not kept */
} dgram_t;

static int dgram_append(const char *data, size_t size, void *ctx)
{
    dgram_t *d = ctx;
    if (d->over || d->len + size > d->limit) {
        d->over = 1;
        return -1; /* stops the dump: the document does not fit anyway */
    }
    if (d->len + size + 1 > d->cap) {
        size_t cap = d->cap * 2;
        char *nb;
        while (cap < d->len + size + 1)
            cap *= 2;
        nb = realloc(d->buf, cap);
        if (!nb)
            return -1;
        d->buf = nb;
        d->cap = cap;
    }
    memcpy(d->buf + d->len, data, size);
    d->len += size;
    d->buf[d->len] = '\0';
    return 0;
}

#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16))

/* Dumps j after the daemon header. Returns 1 with a malloc'd datagram, 0 when it passes limit,
 * -1 when out of memory. Consumes j. */
static int dump(json_t *j, size_t limit, char **out, size_t *out_len)
{
    dgram_t d = {NULL, 0, 1024, limit, 0};
    int rc;
    if (!j)
        return -1;
    d.buf = malloc(d.cap);
    if (!d.buf) {
        json_decref(j);
        return -1;
    }
    d.len = sizeof(DD_XRAY_DAEMON_HEADER) - 1;
    memcpy(d.buf, DD_XRAY_DAEMON_HEADER, d.len + 1);
    rc = json_dump_callback(j, dgram_append, &d, DUMP_FLAGS);
    json_decref(j);
    if (rc != 0) {
        free(d.buf);
        return d.over ? 0 : -1;
    }
    *out = d.buf;
    *out_len = d.len;
    return 1;
}

int dd_xray_segment_encode(apr_pool_t *p, const dd_xray_segment_t *seg, size_t max_datagram,
                           dd_xray_datagrams_t *out)
{
    size_t nsubs =
        seg->nsubsegments > DD_XRAY_MAX_SUBSEGMENTS ? DD_XRAY_MAX_SUBSEGMENTS : seg->nsubsegments;
    dd_xray_segment_t s = *seg;
    int rc;

    memset(out, 0, sizeof(*out));
    s.nsubsegments = nsubs;
    rc = dump(segment_json(p, &s, 1), max_datagram, &out->data[0], &out->len[0]);
    if (rc == 1) {
        out->n = 1;
        return 0;
    }
    if (rc < 0 || nsubs == 0) {
        out->lost = 1 + (unsigned)nsubs;
        return -1;
    }
    /* Too large as one document: the segment alone, then each subsegment on its own. */
    out->split = 1;
    rc = dump(segment_json(p, &s, 0), max_datagram, &out->data[0], &out->len[0]);
    if (rc != 1) {
        out->lost = 1 + (unsigned)nsubs;
        return -1;
    }
    out->n = 1;
    for (size_t i = 0; i < nsubs; i++) {
        rc = dump(subsegment_json(p, &s, &s.subsegments[i], 1), max_datagram, &out->data[out->n],
                  &out->len[out->n]);
        if (rc == 1)
            out->n++;
        else
            out->lost++;
    }
    return 0;
}

void dd_xray_datagrams_free(dd_xray_datagrams_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->data[i]);
    d->n = 0;
}
