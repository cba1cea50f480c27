/**
 * What a one-shot command (`backup`, `maintenance run`) says when it does not get its database's
 * lease: another pg-maintd holds it (exit 75, try again later), or the lease table cannot be used
 * (exit 1, with the SQL that fixes it).
 */
import { EXIT, type ExitCode } from '../core/exit-codes.js';
import { holderText, type LeaderResult } from '../db/leader.js';

export function leaseRefusal(
  what: string,
  database: string,
  r: Exclude<LeaderResult<unknown>, { led: true }>,
): { text: string; exitCode: ExitCode } {
  if (r.reason === 'not_leader')
    return {
      text: `pg-maintd: ${what} of ${database} not started: another pg-maintd holds its lease (${holderText(r.holder)})\n  fix: another run is going on (a scheduled one, or another command); try again once it has finished\n`,
      exitCode: EXIT.TEMPFAIL,
    };
  return {
    text: `pg-maintd: ${what} of ${database} not started: ${r.problem.problem}\n  fix: ${r.problem.fix}\n`,
    exitCode: EXIT.FAILURE,
  };
}
