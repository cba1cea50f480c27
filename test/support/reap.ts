/** Per test file: no CLI process outlives the file that started it. */
import { afterAll } from 'vitest';
import { reapClis } from './daemon.js';

afterAll(() => {
  const left = reapClis();
  // a passing file that leaves one running has a missing stop: say so rather than hide it
  if (left > 0) console.warn(`killed ${left} pg-maintd process(es) this test file left running`);
});
