# SPDX-License-Identifier: Apache-2.0
"""test_110_features_config.py - the tracer features' directives are checked when the config is
read (`apache2 -t` names the directive and the bad value), accepted in S and V only; bad
environment values are reported once at startup (DDP600x) and the defaults apply."""

import re

import pytest

from helpers import NOT_MPM, dump, one_chunk, server_span, unique_ua
from httpd import vhost

pytestmark = NOT_MPM  # runs on the event and sanitized passes: it does not depend on the MPM


@pytest.fixture(scope="module")
def conf_httpd(httpd_factory):
    return httpd_factory("features-config", start=False)


def message_of(output):
    return "\n".join(ln for ln in output.splitlines()
                     if not re.search(r"Syntax error on line \d+ of ", ln))


BAD_VALUES = [
    ("DDTraceHeaderTags :x-id", ["DDTraceHeaderTags", ":x-id"]),
    ("DDTraceHeaderTags x-id:", ["DDTraceHeaderTags", "x-id:"]),
    ("DDTraceHeaderTags ok,bad@name", ["DDTraceHeaderTags", "bad@name"]),
    ("DDTraceHeaderTags *", ["DDTraceHeaderTags", "'*'"]),
    ("DDTraceClientIP maybe", ["DDTraceClientIP", "maybe"]),
    ("DDTraceClientIPHeader x(y)", ["DDTraceClientIPHeader", "x(y)"]),
    ("DDTraceServerErrorStatuses 600", ["DDTraceServerErrorStatuses", "600"]),
    ("DDTraceServerErrorStatuses 500-", ["DDTraceServerErrorStatuses", "500-"]),
    ("DDTraceServerErrorStatuses 5xx", ["DDTraceServerErrorStatuses", "5xx"]),
    ("DDTraceServerErrorStatuses 500;429", ["DDTraceServerErrorStatuses", "500;429"]),
    ("DDTraceQueryString sometimes", ["DDTraceQueryString", "sometimes"]),
    ("DDTraceQueryStringObfuscation (unclosed", ["DDTraceQueryStringObfuscation", "(unclosed"]),
    ("DDTraceQueryStringObfuscation a{2,1}", ["DDTraceQueryStringObfuscation", "a{2,1}"]),
]


@pytest.mark.parametrize("line,tokens", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_fails_config_test(conf_httpd, line, tokens):
    rc, out = conf_httpd.config_test(line + "\n")
    assert rc != 0, f"apache2 -t accepted {line!r}:\n{out}"
    assert "Invalid command" not in out, out
    msg = message_of(out)
    for t in tokens:
        assert t in msg, f"message does not name {t!r} for {line!r}:\n{out}"


@pytest.mark.parametrize("directive", ["DDTraceHeaderTags x-id", "DDTraceClientIP On",
                                       "DDTraceClientIPHeader x-real-ip",
                                       "DDTraceServerErrorStatuses 500-599",
                                       "DDTraceQueryString On",
                                       "DDTraceQueryStringObfuscation secret",
                                       "DDTraceResourceRenaming On",
                                       "DDTraceResourceRenamingAlwaysSimplified On"])
def test_not_in_location(conf_httpd, directive):
    rc, out = conf_httpd.config_test(f"<Location /x>\n {directive}\n</Location>\n")
    assert rc != 0 and "Invalid command" not in out, out
    assert directive.split()[0] in message_of(out), out


GOOD = """
DDTraceHeaderTags x-request-id user-agent:http.request.headers.user-agent
DDTraceHeaderTags "content-type, x-a:my tag"
DDTraceClientIP On
DDTraceClientIPHeader True-Client-IP
DDTraceServerErrorStatuses 500-599, 429
DDTraceQueryString On
DDTraceQueryStringObfuscation '(?:secret|sig)=[^&]+'
DDTraceResourceRenaming On
DDTraceResourceRenamingAlwaysSimplified On
"""


def test_good_config_passes_quietly(conf_httpd):
    vh = vhost(conf_httpd.port, """
    DDTraceHeaderTags x-other
    DDTraceClientIP Off
    DDTraceServerErrorStatuses 400-403
    DDTraceQueryString Off
    DDTraceQueryStringObfuscation \"\"
    DDTraceResourceRenaming Off
    DDTraceResourceRenamingAlwaysSimplified Off""")
    rc, out = conf_httpd.config_test(GOOD + vh)
    assert rc == 0, out
    noise = [ln for ln in out.splitlines() if ln.strip() and ln.strip() != "Syntax OK"]
    assert noise == [], out


BAD_ENV = {
    "DD_TRACE_ENABLED": ("maybe", "DDP6001"),
    "DD_APM_TRACING_ENABLED": ("perhaps", "DDP6002"),
    "DD_TRACE_HEADER_TAGS": ("x-ok,:x-bad", "DDP6003"),
    "DD_TRACE_CLIENT_IP_ENABLED": ("yesno", "DDP6004"),
    "DD_TRACE_CLIENT_IP_HEADER": ("x(y)", "DDP6005"),
    "DD_TRACE_HTTP_SERVER_ERROR_STATUSES": ("500-700", "DDP6006"),
    "DD_HTTP_SERVER_TAG_QUERY_STRING": ("sure", "DDP6007"),
    "DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP": ("(unclosed", "DDP6008"),
    "DD_TRACE_RESOURCE_RENAMING_ENABLED": ("sometimes", "DDP6050"),
    "DD_TRACE_RESOURCE_RENAMING_ALWAYS_SIMPLIFIED_ENDPOINT": ("often", "DDP6051"),
}


@pytest.mark.allow_log(r"DDP600[1-8]", r"DDP605[01]")
def test_bad_environment_reported_and_defaults_apply(httpd_factory, agent, backend):
    env = {k: v for k, (v, _) in BAD_ENV.items()}
    # the regexp is only compiled for a server that shows query strings
    h = httpd_factory("features-bad-env", env=env, config=f"""
DDAgentURL {agent.url}
DDFlushInterval 100
DDTraceQueryString On
ProxyPass /api/ {backend.url}/
""")
    log = h.error_log_text()
    for name, (value, logid) in BAD_ENV.items():
        lines = [ln for ln in log.splitlines() if logid in ln]
        assert len(lines) == 1, f"{logid} for {name}: {lines}\n{log}"
        assert name in lines[0] and value in lines[0], lines[0]
    # defaults: traced, 500-599, no header tags, httpd's client address, no query string, no
    # http.endpoint
    ua = unique_ua("badenv")
    r = h.get("/api/status/503?secret=1", headers={"User-Agent": ua, "x-ok": "1",
                                                  "X-Forwarded-For": "8.8.8.8"})
    assert r.status_code == 503
    s = server_span(one_chunk(agent, ua))
    m = s["meta"]
    assert s["error"] == 1, dump(s)
    assert m["http.url"] == f"http://127.0.0.1:{h.port}/api/status/503", dump(s)
    assert m["http.client_ip"] == "127.0.0.1", dump(s)
    assert not any(k.startswith("http.request.headers.") for k in m), dump(s)
    assert "http.endpoint" not in m, dump(s)


def test_shipped_conf_with_every_directive_uncommented(conf_httpd):
    """conf.d/dd_proxy.conf: every commented directive line, uncommented, is valid."""
    import os
    from httpd import REPO
    with open(os.path.join(REPO, "conf.d", "dd_proxy.conf")) as f:
        text = f.read()
    lines = [ln.replace("#DD", "DD", 1) if ln.lstrip().startswith("#DD") else ln
             for ln in text.splitlines()]
    assert sum(ln.lstrip().startswith("DDTrace") for ln in lines) >= 7
    rc, out = conf_httpd.config_test("\n".join(lines) + "\n")
    assert rc == 0 and "Syntax OK" in out, out
