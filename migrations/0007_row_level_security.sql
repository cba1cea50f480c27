-- Row-level security on projects and tasks: users see only their own projects, and only the tasks
-- in their own projects. It binds every role except the tables' owner (and superusers / BYPASSRLS
-- roles): the application connects as a role that does not own the tables.
--
-- Who "the user" is, is chosen here, when the migration runs:
--   * Supabase (a function auth.uid() exists): auth.uid(), as the seed guide writes it;
--   * elsewhere: current_setting('app.user_id', true)::uuid, which the application sets per
--     transaction: SET LOCAL app.user_id = '<uuid>'. Unset, it is NULL and no row is visible.

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    uid text := CASE WHEN to_regprocedure('auth.uid()') IS NOT NULL
                     THEN 'auth.uid()'
                     ELSE 'nullif(current_setting(''app.user_id'', true), '''')::uuid' END;
BEGIN
    EXECUTE format(
        'CREATE POLICY "Users can only see their own projects" ON projects FOR ALL USING (user_id = %s)',
        uid);
    EXECUTE format(
        'CREATE POLICY "Users can only see tasks in their projects" ON tasks FOR ALL USING (
             project_id IN (SELECT id FROM projects WHERE user_id = %s))',
        uid);
END
$$;
