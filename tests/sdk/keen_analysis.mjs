#!/usr/bin/env node
// Drives Keen's official JavaScript query SDK (npm keen-analysis 3.7.0, unmodified) against a
// query server, with the SDK's own request code.
//
//     node tests/sdk/keen_analysis.mjs < calls.json
//
// The package is installed under tests/node/node_modules by scripts/setup-test-env.
//
// Which build: the package's Node build ("main": dist/node/keen-analysis.js) sends every request
// with https.request({host: hostname, path, ...}), so it always speaks TLS to port 443 and drops
// `protocol` and any `:port` in `host`. Its browser build ("browser": dist/keen-analysis.js, a
// webpack UMD bundle) builds URLs as `{protocol}://{host}/3.0/...` and sends them with the global
// `fetch`, which Node 20 has. That build only needs two globals to load: the UMD wrapper passes
// `window` as its root, and the bundled cache module evaluates `'indexedDB' in self` at load time.
// Both are set to globalThis below; nothing else is shimmed (no indexedDB, so the SDK's query cache
// stays off; fetch, AbortController, Headers are Node's own). This runner therefore exercises
// exactly the code a browser runs, minus CORS: Node's fetch sends no preflight OPTIONS.
//
// stdin: one JSON object
//   {"project_id": "...", "read_key": "...", "master_key": "...",
//    "host": "127.0.0.1:PORT", "protocol": "http",
//    "config": {...},            // optional, merged into the client config (e.g. {"includeMetadata": true})
//    "timeout": 30,              // optional, seconds per call; the call is aborted past it
//    "calls": [
//      {"method": "query", "args": ["count", {"event_collection": "purchases", "timeframe": "this_7_days"}]},
//      {"method": "query", "args": [{"analysis_type": "sum", "event_collection": "p", "target_property": "x"}]},
//      {"method": "get", "args": [{"url": ["events", "purchases"]}]},       // collection schema
//      {"method": "del", "args": [{"url": ["events", "purchases"], "filters": [...], "timeframe": "..."}]},
//      {"method": "url", "args": ["events", "purchases"]}                    // client.url(...)
//    ]}
//
// query -> client.query(...args). get/post/put/del -> client.get/post/put/del(args[0]) where an
// array `url` is first turned into client.url(...url) (so ["events", "x"] becomes
// http://HOST/3.0/projects/PID/events/x) and a missing api_key is filled in: readKey || masterKey
// for get, masterKey for post/put/del.
//
// stdout: one JSON line per call, in order:
//   {"ok": true, "result": <what the SDK resolved with: the full response body; for queries with
//                           an event_collection the SDK also adds "query": <the request params>>}
//   {"ok": false, "error": <message>, "error_code": ..., "status": <HTTP status or null>,
//    "error_type": ..., "rejection": <the SDK's rejection value when it is a plain object>}
// See tests/sdk/README.md for what goes on the wire and which values the SDK rewrites.

import { createRequire } from 'node:module';
import path from 'node:path';

const SDK_VERSION = '3.7.0';

globalThis.window ??= globalThis;
globalThis.self ??= globalThis;

const require = createRequire(new URL('../node/package.json', import.meta.url));
const pkgPath = require.resolve('keen-analysis/package.json');
const pkg = require(pkgPath);
if (pkg.version !== SDK_VERSION) {
  console.error(`keen_analysis.mjs: expects keen-analysis ${SDK_VERSION}, found ${pkg.version} (run scripts/setup-test-env)`);
  process.exit(2);
}
const sdk = require(path.join(path.dirname(pkgPath), pkg.browser));
const KeenAnalysis = sdk.default || sdk.KeenAnalysis;

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

// The browser build's fetch chain has no final catch: a body that is not JSON (or an empty one on a
// non-DELETE) rejects a promise nobody holds and the call's own promise never settles. Such
// rejections are reported as the failure of the call in flight (calls run one at a time).
let failCurrent = null;
process.on('unhandledRejection', (reason) => {
  if (failCurrent) failCurrent(reason);
  else console.error('keen_analysis.mjs: unhandled rejection outside a call:', reason);
});

function describeError(err) {
  if (err && typeof err === 'object' && !(err instanceof Error)) {
    // The SDK's own rejections: {ok: false, error_code, body: <message>, status, statusText} for
    // HTTP errors, {error_code: 'SDKError', message} for refused arguments.
    return {
      ok: false,
      error: err.body ?? err.message ?? err.statusText ?? JSON.stringify(err),
      error_code: err.error_code ?? null,
      status: err.status ?? null,
      error_type: 'rejection',
      rejection: err,
    };
  }
  if (err instanceof Error) {
    const cause = err.cause ? `: ${err.cause.message || err.cause}` : '';
    return {
      ok: false,
      error: `${err.message}${cause}`,
      error_code: err.code ?? null,
      status: null,
      error_type: err.name,
    };
  }
  return { ok: false, error: String(err), error_code: null, status: null, error_type: typeof err };
}

function prepareRequest(client, method, arg) {
  const opts = { ...(arg || {}) };
  if (Array.isArray(opts.url)) opts.url = client.url(...opts.url);
  if (opts.api_key === undefined && opts.apiKey === undefined) {
    opts.api_key = method === 'get'
      ? client.config.readKey || client.config.masterKey
      : client.config.masterKey;
  }
  return opts;
}

function invoke(client, call) {
  const args = call.args || [];
  switch (call.method) {
    case 'query':
      return client.query(...args);
    case 'get':
    case 'post':
    case 'put':
    case 'del':
      return client[call.method](prepareRequest(client, call.method, args[0]));
    case 'url':
      return Promise.resolve(client.url(...args));
    default:
      throw new Error(`keen_analysis.mjs: unsupported method ${JSON.stringify(call.method)}`);
  }
}

async function runCall(client, call, timeoutMs) {
  let timer;
  let pending;
  try {
    return await new Promise((resolve, reject) => {
      failCurrent = reject;
      timer = setTimeout(() => {
        if (pending && typeof pending.abort === 'function') pending.abort();
        reject(new Error(`keen_analysis.mjs: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      pending = invoke(client, call); // may throw synchronously (missing project id / key)
      Promise.resolve(pending).then(resolve, reject);
    }).then((result) => ({ ok: true, result }));
  } catch (err) {
    return describeError(err);
  } finally {
    clearTimeout(timer);
    failCurrent = null;
  }
}

const spec = await readStdin();
const client = new KeenAnalysis({
  projectId: spec.project_id,
  readKey: spec.read_key,
  masterKey: spec.master_key,
  host: spec.host,
  protocol: spec.protocol || 'http',
  ...(spec.config || {}),
});
const timeoutMs = (spec.timeout ?? 30) * 1000;
for (const call of spec.calls || []) {
  const line = await runCall(client, call, timeoutMs);
  process.stdout.write(JSON.stringify(line) + '\n');
}
// An aborted or stuck request must not keep the process alive.
process.exit(0);
