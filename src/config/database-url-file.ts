/**
 * DATABASE_URL_FILE as a source of DATABASE_URL: the file holds the URL itself, so it is read while
 * the configuration is loaded, like the config file. db/url-file.ts re-reads it when it changes.
 */
import { readFileSync } from 'node:fs';
import { parseDatabaseUrl } from '../core/database-url.js';
import { fileReadProblem } from '../core/errors.js';

const PROTOCOLS = ['postgres:', 'postgresql:'];

/** Reads and checks the file: the URL, or an Error whose message says what is wrong (never the URL). */
export function readUrlFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new Error(fileReadProblem(err));
  }
  if (!text) throw new Error('the file is empty');
  let protocol: string;
  try {
    protocol = new URL(text).protocol;
  } catch {
    throw new Error('the file does not hold a URL');
  }
  if (!PROTOCOLS.includes(protocol)) throw new Error('the file does not hold a postgres:// URL');
  try {
    parseDatabaseUrl(text);
  } catch {
    throw new Error('the URL in the file is malformed (a stray % in the password? encode it as %25)');
  }
  return text;
}
