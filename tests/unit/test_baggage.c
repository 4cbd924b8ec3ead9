/* SPDX-License-Identifier: Apache-2.0 */
/* test_baggage.c - the W3C baggage header (lib/dd_baggage.c) read and written as dd-trace-js
 * 5.132 does (text_map.js #extractBaggageItems / #injectBaggageItems): the grammar, the
 * malformed cases that drop the whole header, the limits, percent-decoding and -encoding. */
#include "unit.h"
#include "dd_baggage.h"
#include "dd_span.h"

#include <apr_general.h>
#include <apr_strings.h>

static apr_pool_t *pool;
static const dd_baggage_limits_t lim = {DD_BAGGAGE_MAX_ITEMS, DD_BAGGAGE_MAX_BYTES};

/* The items as "k=v|k=v" (decoded values), or the status name when there are none. */
static const char *read_items(const char *header, const dd_baggage_limits_t *l,
                              dd_baggage_status_t want)
{
    apr_array_header_t *items = (apr_array_header_t *)1;
    dd_baggage_status_t got = dd_baggage_extract(pool, header, l, &items);
    const char *out = "";
    CHECK(got == want);
    if (got != want)
        fprintf(stderr, "  header '%s': status %d, expected %d\n", header ? header : "(null)",
                (int)got, (int)want);
    if (!items)
        return "(none)";
    for (int i = 0; i < items->nelts; i++) {
        const dd_meta_t *m = &((const dd_meta_t *)items->elts)[i];
        CHECK(m->klen == strlen(m->key) && m->vlen == strlen(m->value));
        out = apr_pstrcat(pool, out, i ? "|" : "", m->key, "=", m->value, NULL);
    }
    return out;
}

static void test_grammar(void)
{
    CHECK_STR(read_items(NULL, &lim, DD_BAGGAGE_NONE), "(none)");
    CHECK_STR(read_items("", &lim, DD_BAGGAGE_NONE), "(none)");
    CHECK_STR(read_items(",,", &lim, DD_BAGGAGE_NONE), "(none)");
    CHECK_STR(read_items("user.id=42", &lim, DD_BAGGAGE_OK), "user.id=42");
    CHECK_STR(read_items(" a = 1 ,b=2;prop=x;flag, ,c=3", &lim, DD_BAGGAGE_OK), "a=1|b=2|c=3");
    CHECK_STR(read_items("a=1,,b=2", &lim, DD_BAGGAGE_OK), "a=1|b=2");
    /* a repeated key: the later value, in the first one's place */
    CHECK_STR(read_items("a=1,b=2,a=3", &lim, DD_BAGGAGE_OK), "a=3|b=2");
    /* values may hold '=' and anything but ',' and ';' */
    CHECK_STR(read_items("a=b=c,d=x y", &lim, DD_BAGGAGE_OK), "a=b=c|d=x y");
    /* keys are tokens: !#$%&'*+-.^_`|~ and alphanumerics */
    CHECK_STR(read_items("!#$%&'*+-.^_`|~Az09=v", &lim, DD_BAGGAGE_OK), "!#$%&'*+-.^_`|~Az09=v");
}

static void test_malformed(void)
{
    /* each drops the whole header, valid members before it too */
    static const char *const bad[] = {
        "a=1,noequals", "a=1,=v", "a=1,k=",    "a=1,k= ;p=1", "a;b=c", "a b=1",
        "a(b)=1",       "k\"=1",  "a=1,k/x=2", "k=;prop",     "a=1,b", "{k}=v",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_STR(read_items(bad[i], &lim, DD_BAGGAGE_MALFORMED), "(none)");
    /* white space alone is an empty member, not malformed */
    CHECK_STR(read_items("a=1,   ,b=2", &lim, DD_BAGGAGE_OK), "a=1|b=2");
    CHECK_STR(read_items("a=1, ;x=y", &lim, DD_BAGGAGE_OK), "a=1"); /* nothing before ';' */
}

static void test_decoding(void)
{
    CHECK_STR(read_items("k=Am%C3%A9lie", &lim, DD_BAGGAGE_OK), "k=Am\xC3\xA9lie");
    CHECK_STR(read_items("k=a%2Cb%3Bc%20d", &lim, DD_BAGGAGE_OK), "k=a,b;c d");
    /* what decodeURIComponent throws on: valid %XX decoded, the rest kept, then UTF-8 */
    CHECK_STR(read_items("k=100%,j=%zz%41", &lim, DD_BAGGAGE_OK), "k=100%|j=%zzA");
    CHECK_STR(read_items("k=%FF%41", &lim, DD_BAGGAGE_OK), "k=\xEF\xBF\xBD"
                                                           "A");
    /* keys are not decoded */
    CHECK_STR(read_items("%41=1", &lim, DD_BAGGAGE_OK), "%41=1");
}

static void test_limits(void)
{
    dd_baggage_limits_t two = {2, DD_BAGGAGE_MAX_BYTES}, ten = {64, 10};
    char *big;

    CHECK_STR(read_items("a=1,b=2,c=3", &two, DD_BAGGAGE_TRUNCATED), "a=1|b=2");
    CHECK_STR(read_items("a=1,b=2", &two, DD_BAGGAGE_OK), "a=1|b=2");
    /* bytes: each member with its comma, the last one's too ("a=1,"=4, "bb=22,"=6: 10) */
    CHECK_STR(read_items("a=1,bb=22", &ten, DD_BAGGAGE_OK), "a=1|bb=22");
    CHECK_STR(read_items("a=1,bb=223", &ten, DD_BAGGAGE_TRUNCATED), "a=1");
    /* empty members are charged their comma */
    CHECK_STR(read_items(",,,,,,,,a=1", &ten, DD_BAGGAGE_TRUNCATED), "(none)");
    /* a malformed member past the limit is never read */
    CHECK_STR(read_items("a=1,b=2,bad", &two, DD_BAGGAGE_TRUNCATED), "a=1|b=2");

    /* the defaults: 64 items, 8192 bytes */
    big = "";
    for (int i = 0; i < 65; i++)
        big = apr_psprintf(pool, "%s%sk%d=v", big, i ? "," : "", i);
    CHECK(strstr(read_items(big, &lim, DD_BAGGAGE_TRUNCATED), "k63=v") != NULL);
    CHECK(strstr(read_items(big, &lim, DD_BAGGAGE_TRUNCATED), "k64=v") == NULL);
    big = apr_psprintf(pool, "a=%08190d", 0); /* 8192 bytes + the counted comma */
    CHECK_STR(read_items(big, &lim, DD_BAGGAGE_TRUNCATED), "(none)");
    big = apr_psprintf(pool, "a=%08189d", 0);
    CHECK(strlen(read_items(big, &lim, DD_BAGGAGE_OK)) == 8191);
}

static const char *encode(const char *header, const dd_baggage_limits_t *l, int *cut)
{
    apr_array_header_t *items = NULL;
    dd_baggage_extract(pool, header, &lim, &items);
    return dd_baggage_encode(pool, items, l, cut);
}

static void test_encode(void)
{
    dd_baggage_limits_t two = {2, DD_BAGGAGE_MAX_BYTES}, ten = {64, 10};
    int cut = 0;

    CHECK(dd_baggage_encode(pool, NULL, &lim, &cut) == NULL);
    CHECK_STR(encode("user.id=42, session.id = s1 ;p=1", &lim, &cut), "user.id=42,session.id=s1");
    /* encodeURIComponent: A-Z a-z 0-9 - _ . ! ~ * ' ( ) as they are, the rest %XX */
    CHECK_STR(encode("k=a b%2C%3B%25-_.!~*'()/:@&+$", &lim, &cut),
              "k=a%20b%2C%3B%25-_.!~*'()%2F%3A%40%26%2B%24");
    CHECK_STR(encode("k=Am%C3%A9lie", &lim, &cut), "k=Am%C3%A9lie");
    CHECK(cut == 0);
    CHECK_STR(encode("a=1,b=2,c=3", &two, &cut), "a=1,b=2");
    CHECK(cut == 1);
    cut = 0;
    /* the byte limit counts the encoded text: "a=1," 4 + "b=%20," 6 fit 10, "b=%20%20," not */
    CHECK_STR(encode("a=1,b=%20", &ten, &cut), "a=1,b=%20");
    CHECK(cut == 0);
    CHECK_STR(encode("a=1,b=%20%20", &ten, &cut), "a=1");
    CHECK(cut == 1);
    cut = 0;
    CHECK(encode("a=%20%20%20%20", &ten, &cut) == NULL); /* "a=%20%20%20%20," is 15 */
    CHECK(cut == 1);
}

static void test_tag_keys(void)
{
    apr_array_header_t *k = dd_baggage_tag_keys_parse(pool, " user.id, session.id account.id,,");
    CHECK(k->nelts == 3);
    CHECK(dd_baggage_tag_key(k, "user.id") && dd_baggage_tag_key(k, "account.id"));
    CHECK(!dd_baggage_tag_key(k, "user") && !dd_baggage_tag_key(NULL, "user.id"));
    CHECK(dd_baggage_tag_keys_parse(pool, "")->nelts == 0);
    CHECK(dd_baggage_tag_keys_parse(pool, NULL)->nelts == 0);
    k = dd_baggage_tag_keys_parse(pool, "*");
    CHECK(dd_baggage_tag_key(k, "anything"));
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_grammar();
    test_malformed();
    test_decoding();
    test_limits();
    test_encode();
    test_tag_keys();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
