// An Express service deployed by scalectl as the user's own app (examples/node.yaml).
//
// What scalectl asks of any app: listen on PORT, answer the liveness and readiness paths
// (/healthz, /readyz), and on SIGTERM finish in-flight requests within DRAIN_TIMEOUT.
// What it gives: INSTANCE (host-port), REDIS_URL (and REDIS_PASSWORD when Redis has one),
// app.env and app.secrets as environment variables; with a database, DB_WRITER_URL,
// DB_READER_URL, DATABASE_URL and DB_POOL_SIZE (users.js).
//
// Slow work leaves the request: POST /reports queues a job on Redis (BullMQ) and answers 202 with
// its id at once; worker.js, a process of the same release that scalectl runs as the app's
// worker kind, makes the report; GET /reports/:id tells its state and, once done, its result.
const express = require('express');
const { createClient } = require('redis');
const client = require('prom-client');
const { Queue, Job } = require('bullmq');
const reports = require('./reports');
const users = require('./users');

const port = Number(process.env.PORT || 3000);
const instance = process.env.INSTANCE || `local-${port}`;
const drainMs = parseDuration(process.env.DRAIN_TIMEOUT || '10s');

// prom-client's default metrics: process CPU, memory, open files, and the event-loop delay
// (nodejs_eventloop_lag_p99_seconds), which a CPU-heavy request on the loop drives up.
client.collectDefaultMetrics({ eventLoopMonitoringPrecision: 10 });
const requests = new client.Counter({ name: 'http_requests_total', help: 'Requests answered', labelNames: ['route', 'status'] });

const redis = createClient({ url: process.env.REDIS_URL || 'redis://127.0.0.1:6379', password: process.env.REDIS_PASSWORD || undefined });
let redisReady = false;
redis.on('ready', () => { redisReady = true; });
redis.on('end', () => { redisReady = false; });
redis.on('error', (e) => { redisReady = false; log('warn', 'redis', { error: e.message }); });

let draining = false;
const app = express();
app.disable('x-powered-by');
app.use((req, res, next) => {
  const started = process.hrtime.bigint();
  res.set('X-Instance', instance);
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    requests.inc({ route: req.route ? req.route.path : 'other', status: res.statusCode });
    log('info', 'request', { method: req.method, path: req.path, status: res.statusCode, ms: Math.round(ms * 10) / 10, request_id: req.get('x-request-id') || null });
  });
  next();
});

app.get('/', (req, res) => res.send('Hello World\n'));

// The global hit counter lives in Redis, so every instance on every host shares it.
const count = async (req, res, next) => {
  try { res.json({ count: await redis.incr('node:count') }); } catch (e) { next(e); }
};
app.get('/count', count);
app.post('/count', count);

// Deliberately blocks the event loop: every other request on this process waits meanwhile.
// The fix is a worker thread (or more instances); doctor sees it in the event-loop delay.
app.get('/heavy', (req, res) => {
  const ms = Math.min(Number(req.query.ms) || 200, 5000);
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  res.json({ blocked_ms: ms, x: Math.round(x) });
});

// A report is made by a worker, not here: the request only queues it. Retried with a backoff when
// it fails; once its attempts are spent it stays in the queue's failed set, with its reason.
const queue = new Queue(reports.QUEUE, { connection: reports.connection() });
queue.on('error', (e) => log('warn', 'queue', { error: e.message }));
app.post('/reports', express.json({ limit: '16kb' }), async (req, res, next) => {
  try {
    const job = await queue.add('report', reports.request(req.body || {}), reports.JOB_OPTIONS);
    res.status(202).location(`/reports/${job.id}`).json({ id: job.id });
  } catch (e) { next(e); }
});
app.get('/reports/:id', async (req, res, next) => {
  try {
    // The state first, then the job: a job read first could finish before its state is asked,
    // and a "completed" would then go out with the fields of the job still active.
    const state = await queue.getJobState(req.params.id);
    const job = state === 'unknown' ? null : await Job.fromId(queue, req.params.id);
    if (!job) return res.status(404).json({ error: 'no such report' });
    // `stalled`: times a worker died (or lost its lock) with the job in hand, which BullMQ then
    // handed to another.
    res.json({ id: job.id, state, attempts: job.attemptsMade, stalled: job.stalledCounter || 0, result: job.returnvalue ?? null, failed_reason: job.failedReason || null });
  } catch (e) { next(e); }
});

// Cache-aside: Redis first; on a miss the reader, then the cache filled. A write goes to the
// writer and drops the cached copy.
const db = users.pools(log);
const CACHE_TTL_S = 60;
const userId = (raw) => {
  const id = Number(raw);
  return Number.isInteger(id) && id >= 1 && id <= 1000000 ? id : null;
};
const noDatabase = (res) => res.status(503).json({ error: 'no database is configured: DB_WRITER_URL (or DATABASE_URL) is not set' });
// The driver's words (which may name a role or a host) go to the log, not to the client.
const unavailable = (res, pool, e) => {
  log('warn', 'database', { pool, error: e.message });
  res.status(503).set('Retry-After', '1').json({ error: `the database's ${pool} is unavailable` });
};
app.get('/users/:id', async (req, res, next) => {
  const id = userId(req.params.id);
  if (!id) return res.status(400).json({ error: 'user id must be a number from 1 to 1000000' });
  if (!db) return noDatabase(res);
  try {
    const cached = await redis.get(`cache:user:${id}`);
    if (cached !== null) return res.json({ id, name: cached, source: 'cache', instance });
    let name;
    try { name = await users.read(db, id); } catch (e) { return unavailable(res, 'reader', e); }
    if (name === null) return res.status(404).json({ error: 'no such user' });
    await redis.set(`cache:user:${id}`, name, { EX: CACHE_TTL_S });
    res.json({ id, name, source: 'db', instance });
  } catch (e) { next(e); }
});
app.put('/users/:id', express.json({ limit: '16kb' }), async (req, res, next) => {
  const id = userId(req.params.id);
  if (!id) return res.status(400).json({ error: 'user id must be a number from 1 to 1000000' });
  const name = req.body && req.body.name;
  if (typeof name !== 'string' || name.length < 1 || name.length > 128) return res.status(400).json({ error: 'name must be 1 to 128 characters' });
  if (!db) return noDatabase(res);
  try {
    try { await users.write(db, id, name); } catch (e) { return unavailable(res, 'writer', e); }
    await redis.del(`cache:user:${id}`);
    res.json({ id, name, instance });
  } catch (e) { next(e); }
});

app.get('/healthz', (req, res) => res.send('ok\n'));
app.get('/readyz', (req, res) => {
  if (draining) return res.status(503).send('draining\n');
  if (!redisReady) return res.status(503).send('redis: not connected\n');
  res.send('ready\n');
});
app.get('/metrics', async (req, res) => {
  res.set('Content-Type', client.register.contentType);
  res.send(await client.register.metrics());
});
app.use((err, req, res, next) => {
  log('error', 'request failed', { path: req.path, error: err.message });
  res.status(500).json({ error: 'internal error' });
});

const server = app.listen(port, () => log('info', 'listening', { port }));
// Keep-alive connections from the load balancer outlive nginx's own idle timeout.
server.keepAliveTimeout = 65000;
redis.connect().catch((e) => log('error', 'redis connect', { error: e.message }));

// SIGTERM: stop taking connections, let in-flight requests finish, then exit; a request still
// running at the drain timeout is cut.
process.on('SIGTERM', () => {
  draining = true;
  log('info', 'draining', { timeout_ms: drainMs });
  server.close(() => {
    const closing = [queue.close(), redis.close()];
    if (db) closing.push(db.writer.end(), db.reader.end());
    Promise.allSettled(closing).finally(() => process.exit(0));
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), drainMs).unref();
});

function log(level, msg, fields) {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level, msg, instance, ...fields }) + '\n');
}

function parseDuration(s) {
  const m = /^(\d+)(ms|s|m)$/.exec(s);
  if (!m) return 10000;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60000 }[m[2]];
}
