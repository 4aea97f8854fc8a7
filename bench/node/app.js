// The seeds' Express app: "Hello World" on /, the global hit count in Redis on /count.
// CLUSTER=N runs N workers with the cluster module (the seeds' vertical scaling).
const cluster = require('node:cluster');
const express = require('express');
const { createClient } = require('redis');
const port = Number(process.env.PORT || 3000);
const workers = Number(process.env.CLUSTER || 0);

if (workers > 0 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', () => cluster.fork());
} else {
  const app = express();
  const redis = createClient({ url: process.env.REDIS_URL || 'redis://127.0.0.1:6379' });
  redis.on('error', () => {}); // the benchmark stops Redis last; reconnect errors are noise
  redis.connect().then(() => {
    app.get('/', (req, res) => res.send('Hello World\n'));
    app.get('/count', async (req, res) => {
      const count = await redis.incr('node:count');
      res.json({ count, pid: process.pid });
    });
    app.listen(port);
  });
}
