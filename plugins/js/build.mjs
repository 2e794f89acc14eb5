// Builds uppercase.wasm and counter.wasm with componentize-js, through its JS
// API (the `jco componentize` CLI's WASI shim opens no directories here).
// Every optional feature is disabled: the components import nothing but the
// linecook:handler world.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

for (const name of ['uppercase', 'counter']) {
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: `${name}.js`,
    witPath: '../../wit',
    worldName: 'handler',
    disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
  });
  await writeFile(`${name}.wasm`, component);
  console.log(`built plugins/js/${name}.wasm (${component.length} bytes) in ${Date.now() - started} ms`);
}
