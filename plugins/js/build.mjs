// Builds uppercase.wasm, counter.wasm, window-count.wasm and session.wasm with componentize-js, through its JS
// API (the `jco componentize` CLI's WASI shim opens no directories here).
// Every optional feature is disabled: the components import nothing but the
// linecook:handler world.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

// counter is contract 0.1.0; uppercase, window-count and session 0.2.0.
const contracts = {
  uppercase: '../../wit/0.2.0',
  counter: '../../wit',
  'window-count': '../../wit/0.2.0',
  session: '../../wit/0.2.0',
};
for (const [name, witPath] of Object.entries(contracts)) {
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: `${name}.js`,
    witPath,
    worldName: 'handler',
    disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
  });
  await writeFile(`${name}.wasm`, component);
  console.log(`built plugins/js/${name}.wasm (${component.length} bytes) in ${Date.now() - started} ms`);
}
