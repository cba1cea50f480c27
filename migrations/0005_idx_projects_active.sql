-- pg-maintd: no-transaction
-- CREATE INDEX CONCURRENTLY cannot run in a transaction; a failed build leaves an INVALID index,
-- which the runner drops and builds again on the next run.
CREATE INDEX CONCURRENTLY idx_projects_active ON projects(user_id, created_at) WHERE status = 'active';
