// What the web instances and the workers agree on about reports: the queue's name, how Redis is
// reached (the same REDIS_URL and REDIS_PASSWORD scalectl gives both), a job's options, and the
// work itself.
const IORedis = require('ioredis');

const QUEUE = 'reports';

// Attempts before a job is left in the failed set; completed jobs are kept an hour (their result
// is what GET /reports/:id answers), failed ones a day.
const JOB_OPTIONS = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 200 },
  removeOnComplete: { age: 3600, count: 100000 },
  removeOnFail: { age: 86400 },
};

// BullMQ's workers block on Redis (BZPOPMIN), so their connection must never give up on a
// command (maxRetriesPerRequest: null); the queue's connection fails a command rather than hold
// a request forever.
function connection({ worker = false } = {}) {
  const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  return new IORedis(url, {
    password: process.env.REDIS_PASSWORD || undefined,
    maxRetriesPerRequest: worker ? null : 3,
    enableOfflineQueue: worker,
  });
}

// What a client may ask: a report over `rows` rows (at most 10^6), taking at least `ms`
// milliseconds (at most 60 s) as slow work does, or one that always fails (`fail`).
function request(body) {
  const rows = Math.min(Math.max(Number(body.rows) || 1000, 1), 1e6);
  const ms = Math.min(Math.max(Number(body.ms) || 0, 0), 60000);
  return { rows, ms, fail: body.fail === true };
}

// The work: sums over the rows, waiting `ms` as a slow dependency would (the worker's event loop
// stays free for its other jobs and for SIGTERM).
async function make(data) {
  if (data.fail) throw new Error('this report always fails (asked with fail: true)');
  if (data.ms > 0) await new Promise((r) => setTimeout(r, data.ms));
  let sum = 0;
  for (let i = 1; i <= data.rows; i++) sum += i % 7;
  return { rows: data.rows, sum };
}

module.exports = { QUEUE, JOB_OPTIONS, connection, request, make };
