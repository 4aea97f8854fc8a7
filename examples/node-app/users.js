// The database behind /users/:id, when the topology has one: node-postgres' pools, one on the
// writer (DB_WRITER_URL, else DATABASE_URL: the primary) and one on the reader (DB_READER_URL: the
// replicas, else the primary). On a scalectl fleet both are HAProxy on the app's own host, which
// follows the primary through a failover: no host list in the app.
const { Pool } = require('pg');

// What `node migrate.js` (the release command) makes; safe to run again.
const SCHEMA = `CREATE TABLE IF NOT EXISTS users (
  id integer PRIMARY KEY,
  name text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
)`;

function writerUrl() {
  return process.env.DB_WRITER_URL || process.env.DATABASE_URL || '';
}

// DB_POOL_SIZE: connections per pool (scalectl sets it from database.pool).
function pools(log) {
  const writer = writerUrl();
  if (!writer) return null;
  const max = Number(process.env.DB_POOL_SIZE || 5);
  const make = (url, name) => {
    const pool = new Pool({ connectionString: url, max, connectionTimeoutMillis: 3000, idleTimeoutMillis: 30000 });
    // An idle connection the server (or HAProxy, after a failover) closed: the pool drops it.
    pool.on('error', (e) => log('warn', 'database pool', { pool: name, error: e.message }));
    return pool;
  };
  return { writer: make(writer, 'writer'), reader: make(process.env.DB_READER_URL || writer, 'reader') };
}

// A connection closed under a query (a failover): a read may be asked again once.
function closed(e) {
  return /terminat|Connection terminated|ECONNRESET|ECONNREFUSED|server closed the connection/i.test(e.message || '');
}

async function read(db, id) {
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await db.reader.query('SELECT name FROM users WHERE id = $1', [id]);
      return r.rows.length ? r.rows[0].name : null;
    } catch (e) {
      if (attempt > 0 || !closed(e)) throw e;
    }
  }
}

async function write(db, id, name) {
  await db.writer.query(
    'INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()',
    [id, name],
  );
}

module.exports = { SCHEMA, writerUrl, pools, read, write };
