// Builds {{name}}.wasm with componentize-js. Every optional feature is
// disabled: the component imports nothing but the linecook:handler world
// (re-enable 'stdio' to see console output in the host's log).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'app.js',
  witPath: 'wit',
  worldName: 'handler',
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile('{{name}}.wasm', component);
