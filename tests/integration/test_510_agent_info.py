# SPDX-License-Identifier: Apache-2.0
"""test_510_agent_info.py - issue 13.1: agent discovery. Each child GETs the agent's /info when
its flusher starts (and every minute), on the flusher thread; what the agent says it takes
(config.max_request_bytes) bounds the payloads; an agent older than /info (404), garbage or an
agent that is not there leave everything as configured, and are counted.
"""

import time

import pytest

import conftest
from helpers import NOT_MPM, counters, status_location, unique_ua

pytestmark = NOT_MPM

INFO = {  # the shape of a Datadog agent 7.x answer (datadog-agent pkg/trace/api/info.go)
    "version": "7.52.0", "git_commit": "abc1234",
    "endpoints": ["/v0.3/traces", "/v0.4/traces", "/v0.5/traces", "/v0.7/traces",
                  "/v0.6/stats", "/v0.1/pipeline_stats", "/evp_proxy/v2/", "/v0.7/config",
                  "/info"],
    "client_drop_p0s": True, "span_meta_structs": True, "long_running_spans": True,
    "feature_flags": [], "peer_tags": ["_dd.base_service", "peer.service", "db.instance"],
    "config": {"default_env": "none", "target_tps": 10, "max_eps": 200, "receiver_port": 8126,
               "max_request_bytes": 25000000, "statsd_port": 8125},
}


@pytest.fixture
def own_agent():
    with conftest.running_agent() as a:
        yield a


def info_requests(agent):
    return [r for r in list(agent.other_requests) if r[0] == "GET" and r[1] == "/info"]


def start(httpd_factory, agent, name):
    return httpd_factory(name, config="\n".join([f"DDAgentURL {agent.url}",
                                                 "DDFlushInterval 200", status_location()]))


def send(h, n, tag):
    for _ in range(n):
        assert h.get("/index.html", headers={"User-Agent": unique_ua(tag)}).status_code == 200


def test_each_child_asks_the_agent_at_start_and_uses_its_payload_limit(httpd_factory, own_agent):
    info = dict(INFO, config=dict(INFO["config"], max_request_bytes=3000))
    own_agent.info = info
    h = start(httpd_factory, own_agent, "info-limit")
    assert own_agent.wait_for(lambda a: len(info_requests(a)) >= 2, timeout=5), \
        f"not every child asked /info at start: {info_requests(own_agent)}"
    send(h, 60, "info-limit")  # about 60 x 600 bytes: over 3000 bytes, so several payloads
    own_agent.wait_for(lambda a: sum(len(p.chunks) for p in a.payloads) >= 60, timeout=5)
    sizes = [len(p.body) for p in own_agent.payloads]
    c = counters(h)
    httpd_factory.finish(h)
    assert max(sizes) <= 3000, f"payloads over the agent's 3000 bytes: {sorted(sizes)[-5:]}"
    assert c["agent_info_fetched"] >= 2 and c["agent_info_errors"] == 0, c
    assert c["agent_client_drop_p0s"] == 1 and c["agent_max_request_bytes"] == 3000, c


@pytest.mark.parametrize("answer", [None, "garbage"], ids=["404", "garbage"])
def test_an_agent_without_info_leaves_everything_as_it_was(httpd_factory, own_agent, answer):
    own_agent.info = answer
    h = start(httpd_factory, own_agent, f"info-{answer}")
    own_agent.wait_for(lambda a: len(info_requests(a)) >= 2, timeout=5)
    send(h, 40, "info-none")
    assert own_agent.wait_for(lambda a: sum(len(p.chunks) for p in a.payloads) >= 40, timeout=5)
    time.sleep(0.3)
    c = counters(h)
    httpd_factory.finish(h)
    sizes = [len(p.body) for p in own_agent.payloads]
    assert max(sizes) > 3000, f"no payload over 3000 bytes, although no limit was announced: {sizes}"
    assert c["agent_info_errors"] >= 2 and c["agent_info_fetched"] == 0, c
    assert c["agent_max_request_bytes"] == 0 and c["chunks_dropped"]["agent_error"] == 0, c
