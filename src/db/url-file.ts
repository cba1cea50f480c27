/**
 * DATABASE_URL_FILE: the connection URL read from a file (a mounted Kubernetes Secret, a file a
 * failover tool rewrites). Pools ask for the current URL before they hand out a connection; the file
 * is checked at most once a second and re-read when its modification time, size or inode changes,
 * so a failover to another host or port, or a rotated password, applies without a restart.
 * A file that turns unreadable or invalid keeps the last good URL, and says why once per change.
 */
import { fileStamp } from '../core/file-stamp.js';
import { urlPassword } from '../core/mask.js';
import { registerSecret } from '../log/logger.js';
import { readUrlFile } from '../config/database-url-file.js';
import { errorMessage } from '../core/errors.js';

const URL_FILE_CHECK_MS = 1000;

export interface UrlSettings {
  url: string;
  /** When set, the URL comes from this file and `url` is its content at start-up. */
  urlFile?: string | undefined;
}

export interface CurrentUrl {
  url: string;
  /** Set once per change of the file when the new content cannot be used. */
  problem?: string;
}

interface Entry {
  url: string;
  stamp: string;
  checkedAt: number;
}

const entries = new Map<string, Entry>();

/** The URL to connect with now. */
export function currentUrl(s: UrlSettings, now = Date.now()): CurrentUrl {
  if (!s.urlFile) return { url: s.url };
  let entry = entries.get(s.urlFile);
  if (!entry) {
    const stamp = fileStamp(s.urlFile);
    let url = s.url;
    try {
      url = readUrlFile(s.urlFile); // it may have changed since the configuration was loaded
      registerSecret(urlPassword(url));
    } catch {
      // keep the URL the configuration was loaded with; the next change of the file is read
    }
    entry = { url, stamp, checkedAt: now };
    entries.set(s.urlFile, entry);
    return { url: entry.url };
  }
  if (now - entry.checkedAt < URL_FILE_CHECK_MS) return { url: entry.url };
  entry.checkedAt = now;
  const stamp = fileStamp(s.urlFile);
  if (stamp === entry.stamp) return { url: entry.url };
  entry.stamp = stamp;
  try {
    entry.url = readUrlFile(s.urlFile);
    registerSecret(urlPassword(entry.url)); // a rotated password is scrubbed from logs as the first was
    return { url: entry.url };
  } catch (err) {
    return { url: entry.url, problem: errorMessage(err) };
  }
}
