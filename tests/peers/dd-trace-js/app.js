// SPDX-License-Identifier: Apache-2.0
'use strict'
// A small web app traced by Datadog's own Node.js tracer (dd-trace, pinned in package.json):
// the peer the integration tests compare mod_dd_proxy with (tests/integration/peers.py).
//
// Configured only through the environment, as a user would: DD_TRACE_AGENT_URL (the test's
// capture agent), DD_SERVICE, DD_ENV, DD_VERSION, DD_TRACE_INFERRED_PROXY_SERVICES_ENABLED ...
// PORT=0 picks a free port; the first line on stdout is "listening <port>".
//
//   GET /status/<n>[/...]  answers status n
//   anything else          200
// Every answer's body is JSON: {"headers": {the request's headers, lowercase names},
// "injected": {the headers the tracer would send on a call made from this request}}, so a
// test sees what httpd forwarded (the trace context) next to the spans the tracer sent, and
// what the tracer itself propagates (baggage included) for the same inbound headers.
const tracer = require('dd-trace').init({
  // Nothing of the tracer's own background traffic that the tests do not look at.
  startupLogs: false,
  runtimeMetrics: false,
  profiling: false,
  appsec: false,
  plugins: true,
})

const http = require('http')

const server = http.createServer((req, res) => {
  const m = /^\/+status\/(\d{3})(?:\/|$|\?)/.exec(req.url)
  const status = m ? Number(m[1]) : 200
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    const injected = {}
    const span = tracer.scope().active()
    if (span) tracer.inject(span, 'http_headers', injected)
    const body = JSON.stringify({ headers: req.headers, url: req.url, injected })
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) })
    res.end(body)
  })
})

server.keepAliveTimeout = 5000
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`)
})

// The tests stop the app with SIGTERM: flush what the tracer holds, then exit.
process.on('SIGTERM', () => {
  server.close()
  tracer._tracer?._exporter?.flush?.(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
})
