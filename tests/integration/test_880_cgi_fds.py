# SPDX-License-Identifier: Apache-2.0
"""test_880_cgi_fds.py - a CGI inherits no descriptor of the module's (issue 18 item 3).

The CGI lists its open descriptors (/proc/self/fd, readlink). It runs with mod_cgi under prefork
and worker (forked from the httpd child that holds the flusher's live agent connection and
libcurl's own sockets) and with mod_cgid under event, after that child has sent traces (the
agent connection is up). What it sees must be what it sees under the same httpd without the
module."""

import collections
import re

import pytest

from helpers import collect, unique_ua
from httpd import default_mpm

CGI = """#!/usr/bin/python3
import os
print("Content-Type: text/plain")
print()
for fd in sorted(int(x) for x in os.listdir("/proc/self/fd")):
    try:
        print(fd, os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
"""


def cgi_module():
    return "cgid" if default_mpm() == "event" else "cgi"


def config(agent, h):
    mod = cgi_module()
    sock = f"ScriptSock {h.run_dir}/cgid.sock\n" if mod == "cgid" else ""
    return f"""
LoadModule {mod}_module /usr/lib/apache2/modules/mod_{mod}.so
{sock}<IfModule dd_proxy_module>
DDAgentURL {agent.url}
DDFlushInterval 100
</IfModule>
<Directory "{h.docroot}/cgi">
    Options +ExecCGI
    SetHandler cgi-script
</Directory>
"""


def descriptors(h, agent, traced):
    """The CGI's descriptors above stderr as a multiset of kinds (socket, pipe, anon_inode:...,
    or the path), asked on the connection that first sent traced requests."""
    if traced:
        uas = [unique_ua("fd") for _ in range(3)]
        for ua in uas:
            assert h.get("/index.html", headers={"User-Agent": ua}).status_code == 200
        collect(agent, uas, settle=0.2)  # the flusher has talked to the agent: connection up
    r = h.get("/cgi/fds.py")
    assert r.status_code == 200, r.text
    kinds = collections.Counter()
    for line in r.text.splitlines():
        fd, target = line.split(" ", 1)
        if int(fd) > 2:
            kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds, r.text


def test_cgi_sees_no_module_descriptor(httpd_factory, agent):
    files = {"cgi/fds.py": CGI}
    plain = httpd_factory("cgi-plain", config=lambda h: config(agent, h), module=False,
                          files=files)
    import os
    os.chmod(os.path.join(plain.docroot, "cgi/fds.py"), 0o755)
    base, base_text = descriptors(plain, agent, traced=False)
    httpd_factory.finish(plain)

    h = httpd_factory("cgi-module", config=lambda h: config(agent, h), files=files)
    os.chmod(os.path.join(h.docroot, "cgi/fds.py"), 0o755)
    got, text = descriptors(h, agent, traced=True)
    assert got == base, f"the CGI inherited more than without the module:\n{text}\n" \
                        f"without the module:\n{base_text}"
    assert got["socket"] == 0, text
