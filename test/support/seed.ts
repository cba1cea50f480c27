/**
 * Sample data in the seed guide's users/projects/tasks shape, for backup and restore tests. SEED_SCHEMA
 * is the one copy of "a schema someone else made" (the seed's tables, without the indexes, triggers
 * and policies of migrations/): the migration tests adopt it. The benchmarks and the demo take the
 * schema from migrations/ itself.
 */
import type pg from 'pg';

export const SEED_SCHEMA = `
  CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) UNIQUE NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    first_name VARCHAR(100),
    last_name VARCHAR(100),
    role VARCHAR(50) DEFAULT 'user',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    last_login TIMESTAMP WITH TIME ZONE
  );
  CREATE TABLE projects (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,
    name VARCHAR(255) NOT NULL,
    description TEXT,
    status VARCHAR(50) DEFAULT 'active',
    settings JSONB DEFAULT '{}',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
  );
  CREATE TABLE tasks (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id UUID REFERENCES projects(id) ON DELETE CASCADE,
    title VARCHAR(255) NOT NULL,
    description TEXT,
    status VARCHAR(50) DEFAULT 'pending',
    priority VARCHAR(20) DEFAULT 'medium',
    assigned_to UUID REFERENCES users(id),
    due_date TIMESTAMP WITH TIME ZONE,
    metadata JSONB DEFAULT '{}',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
  );`;

/** Creates the schema and fills it: `users` users, 3 projects each, `tasksPerProject` tasks each. */
export async function seed(
  pool: pg.Pool,
  users = 200,
  tasksPerProject = 5,
): Promise<{ users: number; projects: number; tasks: number }> {
  await pool.query(SEED_SCHEMA);
  await pool.query(
    `INSERT INTO users (email, password_hash, first_name, last_name)
     SELECT 'user' || g || '@example.com', md5(g::text), 'First' || g, 'Last' || g FROM generate_series(1, $1) g`,
    [users],
  );
  await pool.query(
    `INSERT INTO projects (user_id, name, description, settings)
     SELECT u.id, 'Project ' || p || ' of ' || u.email, repeat(md5(u.email || p), 3), jsonb_build_object('n', p)
       FROM users u CROSS JOIN generate_series(1, 3) p`,
  );
  await pool.query(
    `INSERT INTO tasks (project_id, title, description, status, assigned_to, metadata)
     SELECT pr.id, 'Task ' || t, 'Do ' || md5(pr.id::text || t), (ARRAY['pending','done','active'])[1 + t % 3], pr.user_id,
            jsonb_build_object('t', t)
       FROM projects pr CROSS JOIN generate_series(1, $1) t`,
    [tasksPerProject],
  );
  return { users, projects: users * 3, tasks: users * 3 * tasksPerProject };
}

/** Rows per table, for comparing a restore with its source. */
export async function tableCounts(pool: pg.Pool): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of ['users', 'projects', 'tasks']) {
    out[t] = Number((await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${t}`)).rows[0]!.n);
  }
  return out;
}

/** A digest of every row, so "the same rows" means the same contents, not just the same counts. */
export async function tableDigest(pool: pg.Pool): Promise<string> {
  const r = await pool.query<{ d: string }>(`
    SELECT md5(string_agg(x, '|' ORDER BY x)) AS d FROM (
      SELECT 'u' || u::text AS x FROM users u UNION ALL
      SELECT 'p' || p::text FROM projects p UNION ALL
      SELECT 't' || t::text FROM tasks t) s`);
  return r.rows[0]!.d;
}
