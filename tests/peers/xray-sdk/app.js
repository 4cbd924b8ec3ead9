// SPDX-License-Identifier: Apache-2.0
// app.js - an Express app instrumented with the official AWS X-Ray SDK for Node.js, the
// reference mod_dd_proxy's X-Ray segments are compared with (test_952_xray_sdk.py), and an
// instrumented backend behind httpd's mod_proxy.
//
// Environment: PORT (0 = any), AWS_XRAY_DAEMON_ADDRESS (the test's fake daemon),
// SEGMENT_NAME. It samples every request that leaves the decision to it (local rules only,
// so it never calls the daemon's sampling API), and prints "listening <port>" when ready.
//   /status/<n>   answers status n, body "status <n>\n"
//   anything else 200 "node ok\n"
'use strict';
process.env.AWS_XRAY_CONTEXT_MISSING = 'IGNORE_ERROR';
const AWSXRay = require('aws-xray-sdk-core');
const xrayExpress = require('aws-xray-sdk-express');
const express = require('express');

AWSXRay.setLogger({ error() {}, warn() {}, info() {}, debug() {} });
AWSXRay.middleware.disableCentralizedSampling();
AWSXRay.middleware.setSamplingRules({ version: 2, rules: [],
                                      default: { fixed_target: 1000000, rate: 1.0 } });

const app = express();
app.use(xrayExpress.openSegment(process.env.SEGMENT_NAME || 'node-peer'));
app.all('*', (req, res) => {
  const m = /^\/+status\/(\d{3})(?:\/|$)/.exec(req.path);
  const status = m ? Number(m[1]) : 200;
  res.status(status).type('text/plain').send(m ? `status ${status}\n` : 'node ok\n');
});
app.use(xrayExpress.closeSegment());

const server = app.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
