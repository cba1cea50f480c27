/**
 * Which coding a /metrics answer gets, from the request's Accept-Encoding (RFC 9110 §12.5.3): gzip
 * when the client accepts it at least as much as no coding (Prometheus sends `gzip`), the plain text
 * otherwise, and nothing (406) when the client refuses both. `gzip;q=0` refuses gzip; identity is
 * acceptable unless named with q=0, or `*;q=0` without identity named.
 */
export type Coding = 'gzip' | 'identity';

/** Each coding named, with its weight; an item with a malformed weight is ignored. */
function weights(header: string): Map<string, number> {
  const named = new Map<string, number>();
  for (const item of header.split(',')) {
    const [rawName, ...params] = item.split(';');
    const name = rawName!.trim().toLowerCase();
    if (!name) continue;
    let q = 1;
    for (const p of params) {
      const eq = p.indexOf('=');
      if (eq < 0 || p.slice(0, eq).trim().toLowerCase() !== 'q') continue;
      const v = p.slice(eq + 1).trim();
      // RFC 9110 qvalue: 0 to 1 with up to three decimals; anything else voids the item
      q = /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(v) ? Number(v) : NaN;
    }
    if (Number.isNaN(q)) continue;
    // a coding named twice: the higher weight (clients do not, but a proxy may join two headers)
    named.set(name, Math.max(q, named.get(name) ?? 0));
  }
  return named;
}

/** The last header seen and its answer: a Prometheus server sends the same one on every scrape. */
let last: { header: string; coding: Coding | undefined } | undefined;

/** The coding to answer with, or undefined when neither gzip nor identity is acceptable. */
export function chooseCoding(header: string | undefined): Coding | undefined {
  if (header === undefined) return 'identity'; // no header: any coding would do; plain is what a person expects
  if (last?.header === header) return last.coding;
  const coding = choose(header);
  last = { header, coding };
  return coding;
}

function choose(header: string): Coding | undefined {
  const w = weights(header);
  const any = w.get('*');
  const gzip = w.get('gzip') ?? w.get('x-gzip') ?? any ?? 0;
  const identity = w.get('identity') ?? any ?? 1; // `*` covers identity too when it is not named
  if (gzip > 0 && gzip >= identity) return 'gzip';
  if (identity > 0) return 'identity';
  return undefined;
}
