// Validates Mermaid flowcharts with Mermaid's own parser, headless under Node.
//
//   node tests/peers/graph/check-mermaid.mjs FILE...     check each file
//   node tests/peers/graph/check-mermaid.mjs --self-test  prove the checker rejects broken input
//   node tests/peers/graph/check-mermaid.mjs --version    print the mermaid version in use
//
// `mermaid.parse` runs the same flowchart grammar and flowchart database the browser does
// (`graph TD`/`flowchart TD` text -> vertices, edges, classes), minus layout and SVG. Its text
// sanitiser needs a DOM, so happy-dom provides `window` and `document`; nothing is rendered.
//
// Exit codes: 0 every file parsed as a flowchart; 1 some file was rejected (each is named on
// stdout with mermaid's message); 2 usage or I/O error; 3 the npm packages are not installed
// (run tests/peers/graph/install.sh).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const args = process.argv.slice(2);
if (args.length === 0) {
  console.error('usage: check-mermaid.mjs FILE... | --self-test | --version');
  process.exit(2);
}

let Window, mermaid;
try {
  ({ Window } = await import('happy-dom'));
} catch (e) {
  console.error(`error: happy-dom is not installed (${e.code ?? e.message}); run tests/peers/graph/install.sh`);
  process.exit(3);
}
// DOMPurify (inside mermaid) looks for `window` when it is first imported: the DOM goes first.
const dom = new Window();
globalThis.window = dom;
globalThis.document = dom.document;
try {
  ({ default: mermaid } = await import('mermaid'));
} catch (e) {
  console.error(`error: mermaid is not installed (${e.code ?? e.message}); run tests/peers/graph/install.sh`);
  process.exit(3);
}
mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });

/** Parses one text; returns null when it is a valid flowchart, else why not. */
async function problem(text) {
  try {
    const { diagramType } = await mermaid.parse(text);
    return diagramType.startsWith('flowchart') ? null : `parsed as ${diagramType}, not a flowchart`;
  } catch (e) {
    return String(e?.message ?? e).trim();
  }
}

let status = 0;
if (args[0] === '--version') {
  const require = createRequire(import.meta.url);
  console.log(`mermaid ${require('mermaid/package.json').version}, happy-dom ${require('happy-dom/package.json').version}, node ${process.version}`);
} else if (args[0] === '--self-test') {
  const cases = [
    [true, 'flowchart TD\n    a(["x<br/><small>llm</small>"]) --> b{{"g"}}\n    b -->|when #1| c(("end"))\n    classDef guard fill:#fde68a\n    class b guard\n'],
    [false, 'flowchart TD\n    a[["unclosed" --> b\n'],
    [false, 'flowchart TD\n    a -->|dangling|\n'],
    [false, 'flowchart TD\n    a{{"hexagon"} --> b\n'],
    [false, 'sequenceDiagram\n    Alice->>Bob: not a flowchart\n'],
  ];
  for (const [valid, text] of cases) {
    const why = await problem(text);
    const ok = valid ? why === null : why !== null;
    const first = text.split('\n')[1]?.trim();
    console.log(`${ok ? 'ok' : 'FAILED'}: ${valid ? 'accepts' : 'rejects'} \`${first}\`${why ? ` (${why.split('\n')[0]})` : ''}`);
    if (!ok) status = 1;
  }
} else {
  for (const file of args) {
    let text;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      console.error(`error: ${file}: ${e.message}`);
      status = 2;
      continue;
    }
    const why = await problem(text);
    if (why === null) {
      console.log(`ok: ${file}`);
    } else {
      console.log(`rejected: ${file}\n${why.replace(/^/gm, '    ')}`);
      if (status === 0) status = 1;
    }
  }
}
await dom.happyDOM.close();
process.exit(status);
