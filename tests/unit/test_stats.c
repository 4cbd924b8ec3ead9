/* test_stats.c - the counters as JSON, and the last agent error's text. */
#include "unit.h"
#include "dd_stats.h"

#include <stdlib.h>
#include <jansson.h>

int main(void)
{
    static dd_stats_t s; /* zeroed, as shared memory is */
    char text[sizeof(s.last_agent_error)];
    json_error_t err;

    dd_stats_add(&s.requests_traced, 3);
    dd_stats_add(&s.gateway_rejected[DD_GW_BAD_TIME], 2);
    dd_stats_add(&s.chunks_dropped[DD_DROP_QUEUE_FULL], 5);
    atomic_store(&s.last_agent_error_time, 1700000000);
    atomic_store(&s.last_agent_error_status, 503);
    dd_stats_set_error_text(&s, "HTTP 503");
    dd_stats_get_error_text(&s, text, sizeof(text));
    CHECK_STR(text, "HTTP 503");

    char *out = dd_stats_to_json(&s);
    CHECK(out != NULL);
    json_t *j = out ? json_loads(out, 0, &err) : NULL;
    CHECK(j != NULL);
    if (j) {
        CHECK(json_integer_value(json_object_get(j, "requests_traced")) == 3);
        json_t *rej = json_object_get(j, "gateway_headers_rejected");
        CHECK(json_integer_value(json_object_get(rej, "bad_time")) == 2);
        CHECK(json_object_get(rej, "ok") == NULL && json_object_get(rej, "absent") == NULL);
        CHECK(json_object_get(rej, "untrusted_peer") != NULL);
        json_t *drop = json_object_get(j, "chunks_dropped");
        CHECK(json_integer_value(json_object_get(drop, "queue_full")) == 5);
        json_t *last = json_object_get(j, "last_agent_error");
        CHECK(json_integer_value(json_object_get(last, "http_status")) == 503);
        CHECK(json_integer_value(json_object_get(last, "time")) == 1700000000);
        CHECK_STR(json_string_value(json_object_get(last, "message")), "HTTP 503");
        json_decref(j);
    }
    free(out);

    /* an over-long or non-UTF-8 error text never breaks the document */
    char longer[400];
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    dd_stats_set_error_text(&s, longer);
    dd_stats_get_error_text(&s, text, sizeof(text));
    CHECK(strlen(text) == sizeof(text) - 1);
    dd_stats_set_error_text(&s, "bad \xff byte");
    out = dd_stats_to_json(&s);
    CHECK(out != NULL);
    free(out);
    UNIT_DONE();
}
