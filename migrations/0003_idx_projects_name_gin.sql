-- pg-maintd: no-transaction
-- CREATE INDEX CONCURRENTLY cannot run in a transaction; a failed build leaves an INVALID index,
-- which the runner drops and builds again on the next run.
CREATE INDEX CONCURRENTLY idx_projects_name_gin ON projects USING gin(to_tsvector('english', name));
