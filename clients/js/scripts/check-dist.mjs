// Fails when the committed dist/ differs from a fresh build of src/.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const tmp = mkdtempSync(join(tmpdir(), 'chouquette-dist-'));
let stale = [];
try {
  execFileSync(process.execPath, [join(root, 'scripts', 'build.mjs'), tmp], { cwd: root, stdio: 'inherit' });
  for (const file of ['chouquette.js', 'chouquette.d.ts']) {
    let committed = null;
    try {
      committed = readFileSync(join(root, 'dist', file), 'utf8');
    } catch {
      /* missing */
    }
    if (committed !== readFileSync(join(tmp, file), 'utf8')) stale.push(file);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
if (stale.length) {
  console.error(`dist/ is stale (${stale.join(', ')}): run \`npm run build\` in clients/js and commit dist/.`);
  process.exit(1);
}
console.log('dist/ matches the sources');
