// The app's worker kind (examples/node.yaml, app.workers): the same release as server.js, run by
// scalectl with the same environment but no PORT. It takes report jobs from the BullMQ queue on
// Redis, WORKER_CONCURRENCY at a time (default 4).
//
// On SIGTERM it stops taking jobs and finishes the ones in hand (scalectl gives it the workers'
// drain timeout before SIGKILL). A worker killed mid-job loses nothing: its lock expires and
// BullMQ's stalled-job check hands the job to another worker.
const { Worker } = require('bullmq');
const reports = require('./reports');

const instance = process.env.INSTANCE || 'local-worker';
const concurrency = Number(process.env.WORKER_CONCURRENCY || 4);

// The result names the worker that made it.
const worker = new Worker(reports.QUEUE, async (job) => ({ ...(await reports.make(job.data)), worker: instance }), {
  connection: reports.connection({ worker: true }),
  concurrency,
  // A dead worker's job is taken again after its lock lapses (renewed every half of it).
  lockDuration: Number(process.env.WORKER_LOCK_MS || 10000),
  stalledInterval: Number(process.env.WORKER_LOCK_MS || 10000),
});
worker.on('ready', () => log('info', 'worker ready', { queue: reports.QUEUE, concurrency }));
worker.on('completed', (job) => log('info', 'job completed', { id: job.id, attempts: job.attemptsMade }));
worker.on('failed', (job, e) => log('warn', 'job failed', { id: job && job.id, attempts: job && job.attemptsMade, error: e.message }));
worker.on('error', (e) => log('warn', 'worker', { error: e.message }));

process.on('SIGTERM', () => {
  log('info', 'draining', { active: 'finishing the jobs in hand' });
  worker.close().then(() => process.exit(0), () => process.exit(1));
});

function log(level, msg, fields) {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level, msg, instance, ...fields }) + '\n');
}
