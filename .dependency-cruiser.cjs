// The layers of src/, lowest first, as README's Layout table names them: a file may import from its
// own layer and the layers before it, never from one after it, and no import circle is allowed
// (type-only imports count: they are how circles start). `npm test` runs this first
// (`npm run layers`); a wrong import fails it with the rule's name, `no-upward-import-from-<layer>`.
// test/layers/layers.test.ts shows that it does.
/** [layer, folder] lowest first. */
const LAYERS = [
  ['torch', 'src/torch/'],
  ['nn', 'src/nn/'],
  ['optim', 'src/optim/'],
  ['io', 'src/io/'],
  ['hub', 'src/hub/'],
  ['runlog', 'src/runlog/'],
  ['onnx', 'src/onnx/'],
  ['models', 'src/models/'],
  ['diffusion', 'src/diffusion/'],
  ['data', 'src/data/'],
  ['eval', 'src/eval/'],
  ['train', 'src/train/'],
  ['sampling', 'src/sampling/'],
  ['web', 'src/web/'],
  ['pipelines', 'src/pipelines/'],
  ['demo', 'src/demo/'],
  ['cli', 'src/cli/'],
  // The package's entries (package.json "exports" that are not a room's index.ts): they may import
  // every room, and no room imports them.
  ['entry', 'src/index.ts|src/entry/'],
];

const anchored = (folders) => `^(${folders.map(([, folder]) => folder.replace(/\./g, '\\.')).join('|')})`;

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'An import circle: split the file that both sides need, or move the shared part down a layer.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    ...LAYERS.map(([layer, folder], i) => ({
      name: `no-upward-import-from-${layer}`,
      comment: `${layer} (${folder}) imports only from ${LAYERS.slice(0, i + 1).map(([name]) => name).join(', ')}`,
      severity: 'error',
      from: { path: anchored([[layer, folder]]) },
      to: { path: '^src/', pathNot: anchored(LAYERS.slice(0, i + 1)) },
    })),
    {
      name: 'no-folder-outside-the-layers',
      comment: 'Every file under src/ belongs to a layer of LAYERS: a new room gets its place there and in README\'s table.',
      severity: 'error',
      from: { path: '^src/', pathNot: anchored(LAYERS) },
      to: {},
    },
  ],
  options: {
    tsPreCompilationDeps: true,
    doNotFollow: { path: 'node_modules' },
    includeOnly: '^src/',
  },
};
