/**
 * Sample rows in the seed guide's users/projects/tasks shape (the demo; the schema comes from
 * migrations). ANALYZE them from another session once this one has ended: a backend's pending row
 * counts are added to pg_stat_user_tables when it exits, on top of what an ANALYZE in it measured.
 */
import type pg from 'pg';

export async function insertSampleData(
  client: pg.ClientBase,
  opts: { users: number; projectsPerUser: number; tasksPerProject: number },
): Promise<{ users: number; projects: number; tasks: number }> {
  await client.query(
    `INSERT INTO users (email, password_hash, first_name, last_name, role)
     SELECT 'user' || g || '@example.com', md5(g::text), 'First' || g, 'Last' || g,
            CASE WHEN g % 50 = 0 THEN 'admin' ELSE 'user' END
       FROM generate_series(1, $1) g`,
    [opts.users],
  );
  await client.query(
    `INSERT INTO projects (user_id, name, description, status, settings, created_at)
     SELECT u.id, (ARRAY['Website relaunch','Data migration','Quarterly report','Mobile app','Onboarding'])[1 + p % 5] || ' ' || p,
            'Project ' || p || ' of ' || u.email, CASE WHEN p % 4 = 0 THEN 'archived' ELSE 'active' END,
            jsonb_build_object('color', (ARRAY['red','green','blue'])[1 + p % 3]), now() - p * interval '1 day'
       FROM users u CROSS JOIN generate_series(1, $1) p`,
    [opts.projectsPerUser],
  );
  await client.query(
    `INSERT INTO tasks (project_id, title, description, status, priority, assigned_to, due_date, metadata)
     SELECT pr.id, (ARRAY['Write tests','Review design','Fix login bug','Deploy','Update docs'])[1 + t % 5] || ' #' || t,
            'Task ' || t || ' of ' || pr.name, (ARRAY['pending','in_progress','done'])[1 + t % 3],
            (ARRAY['low','medium','high'])[1 + t % 3], pr.user_id, now() + t * interval '1 day', jsonb_build_object('t', t)
       FROM projects pr CROSS JOIN generate_series(1, $1) t`,
    [opts.tasksPerProject],
  );
  const r = await client.query<{ u: string; p: string; t: string }>(
    'SELECT (SELECT count(*) FROM users) AS u, (SELECT count(*) FROM projects) AS p, (SELECT count(*) FROM tasks) AS t',
  );
  return { users: Number(r.rows[0]!.u), projects: Number(r.rows[0]!.p), tasks: Number(r.rows[0]!.t) };
}
