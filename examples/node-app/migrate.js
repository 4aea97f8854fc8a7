// The release command (app.release_command: [node, migrate.js]): the schema on the database's
// writer, once per release, before any instance switches to it. Exit 1 stops the deploy.
const { Client } = require('pg');
const { SCHEMA, writerUrl } = require('./users');

(async () => {
  const url = writerUrl();
  if (!url) throw new Error('no database to migrate: DB_WRITER_URL (or DATABASE_URL) is not set');
  const c = new Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    await c.query(SCHEMA);
  } finally {
    await c.end();
  }
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'the schema is in place' }) + '\n');
})().catch((e) => {
  process.stderr.write(`migrate: ${e.message}\n`);
  process.exit(1);
});
