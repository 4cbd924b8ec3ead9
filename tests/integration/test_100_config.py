# SPDX-License-Identifier: Apache-2.0
"""test_100_config.py - CONTRACT section 2: every directive is validated when the config is
read; `apache2 -t` fails with a message naming the directive and the bad value, and directives
are accepted only in the contexts the table lists."""

import re

import pytest

from httpd import vhost


@pytest.fixture(scope="module")
def conf_httpd(httpd_factory):
    return httpd_factory("config", start=False)


def message_of(output):
    """apache2 -t output without the 'Syntax error on line N of /path:' line, so a value
    cannot be 'found' in the path or line number."""
    return "\n".join(ln for ln in output.splitlines()
                     if not re.search(r"Syntax error on line \d+ of ", ln))


def has_word(text, word):
    return re.search(r"(?<![\w.:/-])" + re.escape(word) + r"(?![\w.:/-])", text) is not None


# (directive line, tokens the message must name). The first token is the directive.
BAD_VALUES = [
    ("DDTrace maybe", ["DDTrace", "maybe"]),
    ("DDInferredProxy maybe", ["DDInferredProxy", "maybe"]),
    ("DDInferredProxyStripHeaders maybe", ["DDInferredProxyStripHeaders", "maybe"]),
    ("DDInferredProxyUserTag maybe", ["DDInferredProxyUserTag", "maybe"]),
    ("DDTrustInboundContext maybe", ["DDTrustInboundContext", "maybe"]),
    ("DDAgentURL ftp://x", ["DDAgentURL", "ftp://x"]),
    ("DDAgentURL http://:99999", ["DDAgentURL", "http://:99999"]),
    ("DDAgentURL http://127.0.0.1:99999", ["DDAgentURL", "http://127.0.0.1:99999"]),
    ("DDAgentURL not-a-url", ["DDAgentURL", "not-a-url"]),
    ("DDFlushInterval -5", ["DDFlushInterval", "-5"]),
    ("DDFlushInterval abc", ["DDFlushInterval", "abc"]),
    ("DDFlushInterval 0", ["DDFlushInterval", "0"]),
    ("DDFlushInterval 10x", ["DDFlushInterval", "10x"]),
    ("DDQueueLimit 0 1", ["DDQueueLimit", "0"]),
    ("DDQueueLimit x y", ["DDQueueLimit", "x"]),
    ("DDQueueLimit 100 0", ["DDQueueLimit", "0"]),
    ("DDQueueLimit -1 1048576", ["DDQueueLimit", "-1"]),
    ("DDService \"\"", ["DDService"]),
    ("DDSampleRate 1.5", ["DDSampleRate", "1.5"]),
    ("DDSampleRate abc", ["DDSampleRate", "abc"]),
    ("DDSampleRate -0.1", ["DDSampleRate", "-0.1"]),
    ("DDRateLimit -1", ["DDRateLimit", "-1"]),
    ("DDRateLimit abc", ["DDRateLimit", "abc"]),
    ("DDSamplingRules {bad", ["DDSamplingRules", "{bad"]),
    ("DDPropagationStyle bogus", ["DDPropagationStyle", "bogus"]),
    ("DDTrustInboundContext continue-ish", ["DDTrustInboundContext", "continue-ish"]),
    ("DDPropagationExtractFirst maybe", ["DDPropagationExtractFirst", "maybe"]),
    ("DDBaggageTagKeys user.id a=b", ["DDBaggageTagKeys", "a=b"]),
    ("DDBaggageMaxItems 0", ["DDBaggageMaxItems", "0"]),
    ("DDBaggageMaxItems 70000", ["DDBaggageMaxItems", "70000"]),
    ("DDBaggageMaxBytes 8k", ["DDBaggageMaxBytes", "8k"]),
    ("DDTraceResourceRenaming maybe", ["DDTraceResourceRenaming", "maybe"]),
    ("DDTraceResourceRenaming 1", ["DDTraceResourceRenaming", "1"]),
    ("DDTraceResourceRenamingAlwaysSimplified yes", ["DDTraceResourceRenamingAlwaysSimplified",
                                                     "yes"]),
    ("DDInferredProxyTrustedNetworks 10.0.0.0/33", ["DDInferredProxyTrustedNetworks",
                                                    "10.0.0.0/33"]),
    ("DDInferredProxyTrustedNetworks not-a-cidr", ["DDInferredProxyTrustedNetworks",
                                                   "not-a-cidr"]),
]


@pytest.mark.parametrize("line,tokens", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_fails_config_test(conf_httpd, line, tokens):
    rc, out = conf_httpd.config_test(line + "\n")
    assert rc != 0, f"apache2 -t accepted {line!r}:\n{out}"
    assert "Invalid command" not in out, f"the module does not know the directive:\n{out}"
    msg = message_of(out)
    for t in tokens:
        if t == "0" or t.isalpha() and len(t) == 1:
            assert has_word(msg, t), f"message does not name {t!r} for {line!r}:\n{out}"
        else:
            assert t in msg, f"message does not name {t!r} for {line!r}:\n{out}"


# Directives in a context the contract's table does not list for them.
BAD_CONTEXTS = [
    ("<Location /x>\n DDInferredProxy On\n</Location>", "DDInferredProxy"),
    ("<Location /x>\n DDService svc\n</Location>", "DDService"),
    ("<Location /x>\n DDFlushInterval 100\n</Location>", "DDFlushInterval"),
    ("<Directory /tmp>\n DDInferredProxyStripHeaders Off\n</Directory>",
     "DDInferredProxyStripHeaders"),
    # S only: not inside a virtual host either
    ("VHOST DDAgentURL http://127.0.0.1:8126", "DDAgentURL"),
    ("VHOST DDFlushInterval 100", "DDFlushInterval"),
    ("VHOST DDQueueLimit 100 1048576", "DDQueueLimit"),
    ("VHOST DDPropagationExtractFirst On", "DDPropagationExtractFirst"),
    ("VHOST DDBaggageTagKeys user.id", "DDBaggageTagKeys"),
    ("VHOST DDBaggageMaxItems 10", "DDBaggageMaxItems"),
]


@pytest.mark.parametrize("block,directive", BAD_CONTEXTS, ids=[b[1] + "-" + b[0].split()[0]
                                                               for b in BAD_CONTEXTS])
def test_directive_outside_its_context_fails(conf_httpd, block, directive):
    if block.startswith("VHOST "):
        block = vhost(conf_httpd.port, "    " + block[len("VHOST "):])
    rc, out = conf_httpd.config_test(block + "\n")
    assert rc != 0, f"apache2 -t accepted:\n{block}\n{out}"
    assert "Invalid command" not in out, f"the module does not know the directive:\n{out}"
    assert directive in message_of(out), out


GOOD_CONFIG = """
DDTrace On
DDInferredProxy On
DDAgentURL http://127.0.0.1:8126
DDService my-service
DDEnv staging
DDVersion 1.2.3
DDTag team core
DDTag owner "Q A"
DDSampleRate 0.5
DDSamplingRules '[{"service": "web*", "sample_rate": 0.1}]'
DDRateLimit 50
DDPropagationStyle datadog tracecontext b3multi xray
DDTrustInboundContext Off
DDInferredProxyTrustedNetworks 10.0.0.0/8 127.0.0.1/32 ::1/128
DDInferredProxyStripHeaders Off
DDInferredProxyUserTag On
DDFlushInterval 100
DDQueueLimit 100 1048576
<Location /off>
    DDTrace Off
    DDTag where off
    DDTrustInboundContext On
    <IfModule dd_proxy_module>
        DDTrace on
    </IfModule>
</Location>
"""


def test_good_config_passes(conf_httpd):
    vh = vhost(conf_httpd.port, """
    DDInferredProxy off
    DDService vhost-service
    DDEnv prod
    DDVersion 2
    DDTag vh yes
    DDSampleRate 1
    DDInferredProxyTrustedNetworks 192.168.0.0/16
    DDInferredProxyStripHeaders On
    DDInferredProxyUserTag Off
    DDTrustInboundContext On""")
    rc, out = conf_httpd.config_test(GOOD_CONFIG + vh)
    assert rc == 0 and "Syntax OK" in out, out


@pytest.mark.parametrize("line", [
    """DDSamplingRules '[{"service": "web*", "sample_rate": 0.1}]'""",
    r'DDSamplingRules "[{\"service\": \"web*\", \"sample_rate\": 0.1}]"',
    """DDSamplingRules []""",
], ids=["single-quoted", "double-quoted-escaped", "bare"])
def test_sampling_rules_apache_quoting(conf_httpd, line):
    """The JSON arrives as httpd's own argument parser (ap_getword_conf) reads a quoted word:
    surrounding quotes removed, backslash-escaped quotes unescaped."""
    rc, out = conf_httpd.config_test(line + "\n")
    assert rc == 0 and "Syntax OK" in out, f"{line}\n{out}"


@pytest.mark.parametrize("url", ["http://localhost:8126", "http://127.0.0.1:1",
                                 "https://agent.example:443", "unix:///var/run/datadog/apm.socket",
                                 "http://[::1]:8126"])
def test_agent_url_forms_accepted(conf_httpd, url):
    rc, out = conf_httpd.config_test(f"DDAgentURL {url}\n")
    assert rc == 0 and "Syntax OK" in out, out


def test_config_test_is_quiet(conf_httpd):
    """A good config gives no warnings from the module on `apache2 -t`."""
    rc, out = conf_httpd.config_test(GOOD_CONFIG)
    assert rc == 0
    noise = [ln for ln in out.splitlines() if ln.strip() and ln.strip() != "Syntax OK"]
    assert noise == [], out
