// Builds the package.
//   node scripts/build.mjs <outdir>      dist files: <outdir>/chouquette.js (ESM bundle) and chouquette.d.ts
//   node scripts/build.mjs --modules-only   every module to .build/ for the unit tests
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const run = (args) => execFileSync(process.execPath, [tsc, ...args], { cwd: root, stdio: 'inherit' });

const banner = '// @chouquette/client: generated from clients/js/src by `npm run build`; do not edit.';

if (process.argv[2] === '--modules-only') {
  const entries = [];
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.name.endsWith('.ts')) entries.push(join(dir, e.name));
    }
  };
  walk(src);
  rmSync(join(root, '.build'), { recursive: true, force: true });
  await esbuild.build({
    entryPoints: entries, outbase: src, outdir: join(root, '.build'), bundle: true, splitting: true,
    format: 'esm', target: 'es2020', platform: 'neutral', logLevel: 'warning',
  });
  process.exit(0);
}

const out = resolve(process.argv[2] ?? join(root, 'dist'));
mkdirSync(out, { recursive: true });

// Type-check everything first.
run(['-p', 'tsconfig.json', '--noEmit']);

// The JS bundle: readable, not minified.
await esbuild.build({
  entryPoints: [join(src, 'index.ts')], outfile: join(out, 'chouquette.js'), bundle: true, format: 'esm',
  target: 'es2020', platform: 'neutral', minify: false, legalComments: 'none', charset: 'utf8',
  banner: { js: banner }, logLevel: 'warning',
});

// The declarations: emitted per module, then the public ones joined into one file.
const tmp = mkdtempSync(join(tmpdir(), 'chouquette-dts-'));
try {
  run(['-p', 'tsconfig.json', '--emitDeclarationOnly', '--outDir', tmp]);
  const parts = ['types', 'emitter', 'lattice', 'client'].map((name) => {
    const text = readFileSync(join(tmp, `${name}.d.ts`), 'utf8')
      .split('\n')
      .filter((line) => !/^import\s/.test(line) && !/^export (type )?\*? ?(\{[^}]*\} )?from /.test(line) && line !== 'export {};')
      .join('\n')
      .trim();
    return `// ${name}.ts\n${text}\n`;
  });
  writeFileSync(join(out, 'chouquette.d.ts'), `${banner}\n\n${parts.join('\n')}`);
  // The joined file must stand alone: check a consumer against it.
  const consumer = join(tmp, 'consumer');
  mkdirSync(consumer);
  writeFileSync(join(consumer, 'chouquette.d.ts'), readFileSync(join(out, 'chouquette.d.ts')));
  writeFileSync(join(consumer, 'use.ts'), [
    "import { Chouquette, type DataMessage, type StateEvent } from './chouquette';",
    "const c = new Chouquette({ url: 'ws://h/ws', getSubscription: async () => ({ class: 'subscribe', app_id: 'a', channels: {} }) });",
    "const off: () => void = c.on('data', (m: DataMessage) => void m.offset);",
    "c.on('state', (s: StateEvent) => void s.transport);",
    "c.on('reset', (r) => void r.reason.toUpperCase());",
    'off(); void c.connect(); c.close();',
  ].join('\n'));
  run(['--noEmit', '--strict', '--skipLibCheck', '--target', 'es2020', '--module', 'es2020', '--moduleResolution', 'bundler',
    '--lib', 'es2022,dom', join(consumer, 'use.ts')]);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(`built ${join(out, 'chouquette.js')} and chouquette.d.ts`);
