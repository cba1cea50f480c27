import { describe, expect, it } from 'vitest';
import { parseGlobals, planGlobals } from '../../src/backup/globals-script.js';

/** pg_dumpall 15.18 --globals-only, as it wrote it (password hash shortened). */
const SAMPLE = `--
-- PostgreSQL database cluster dump
--

\\restrict PyRpAAdCGK6Joodn2dX4qP0zJadeA7dDDgwT6Ppu83fk0gJVL6MbBd2byzyPcxU

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

CREATE ROLE "Weird Name""x";
ALTER ROLE "Weird Name""x" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:DTfK==$Vy3G=:pL3B=' VALID UNTIL '2030-01-01 00:00:00+00';
COMMENT ON ROLE app IS 'it''s app
line2';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE reader;
ALTER ROLE reader WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;

ALTER ROLE app SET search_path TO 'a', 'b c';
ALTER ROLE app SET work_mem TO '64MB';

GRANT reader TO app WITH ADMIN OPTION GRANTED BY postgres;
GRANT reader TO postgres GRANTED BY postgres;

CREATE TABLESPACE tsx OWNER app LOCATION '/tmp/gtest/ts';
ALTER TABLESPACE tsx SET (seq_page_cost=2);
GRANT ALL ON TABLESPACE tsx TO reader;
COMMENT ON TABLESPACE tsx IS 'x';

\\unrestrict PyRpAAdCGK6Joodn2dX4qP0zJadeA7dDDgwT6Ppu83fk0gJVL6MbBd2byzyPcxU

--
-- PostgreSQL database cluster dump complete
--
`;

describe('globals script', () => {
  it("parses what pg_dumpall writes and leaves the target's own roles alone", () => {
    const statements = parseGlobals(SAMPLE);
    expect(statements.filter((s) => s.kind === 'create-role').map((s) => s.role)).toEqual([
      'Weird Name"x',
      'app',
      'postgres',
      'reader',
    ]);
    const plan = planGlobals(statements, new Set(['postgres']), new Set());
    expect(plan.created.sort()).toEqual(['Weird Name"x', 'app', 'reader']);
    expect(plan.existing).toEqual(['postgres']);
    expect(plan.script).toContain('CREATE ROLE "Weird Name""x";');
    expect(plan.script).toContain(`COMMENT ON ROLE "app" IS 'it''s app\nline2';`);
    expect(plan.script).toContain(`ALTER ROLE "app" SET "search_path" TO 'a', 'b c';`);
    expect(plan.script).toContain('GRANT "reader" TO "app" WITH ADMIN OPTION;');
    // the existing superuser is neither altered nor made a member of anything
    expect(plan.script).not.toMatch(/ALTER ROLE "postgres"/);
    expect(plan.script).not.toMatch(/TO "postgres"/);
    expect(plan.script).not.toMatch(/GRANTED BY/);
    expect(plan.script).toMatch(
      /CREATE TABLESPACE "tsx" OWNER "app" LOCATION '\/tmp\/gtest\/ts';\nALTER TABLESPACE/,
    );
    // roles in one transaction, the tablespace (which cannot run in one) after it
    expect(plan.script.indexOf('COMMIT;')).toBeLessThan(plan.script.indexOf('CREATE TABLESPACE'));
  });

  it.each([
    ['DROP ROLE', 'DROP ROLE app;'],
    ['COPY PROGRAM', "COPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned';"],
    ['a function', 'CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;'],
    ['a meta-command', '\\! touch /tmp/pwned\n'],
    ['a meta-command mid-line', 'CREATE ROLE x; \\! id\n'],
    ['a statement riding on a role', "CREATE ROLE x; SELECT pg_read_file('/etc/passwd');"],
    [
      'a role option pg_dumpall never writes',
      'ALTER ROLE x WITH SUPERUSER IN ROLE pg_execute_server_program;',
    ],
    ['a reserved role', 'CREATE ROLE pg_x;'],
    ['a setting that loads code', "ALTER ROLE x SET session_preload_libraries TO 'evil';"],
    ['a session setting', "SET session_authorization = 'x';"],
    ['an escape string', "ALTER ROLE x WITH PASSWORD E'\\\\x';"],
    ['a missing semicolon', 'CREATE ROLE x'],
    ['a grant of a table', 'GRANT SELECT ON TABLE t TO x;'],
    ['a dollar quote', 'COMMENT ON ROLE x IS $q$hi$q$;'],
  ])('refuses %s', (_, text) => {
    expect(() => parseGlobals(text)).toThrow(/refused, nothing of them ran/);
  });
});
