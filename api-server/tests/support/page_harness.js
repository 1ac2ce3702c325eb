// Runs the /docs page's script (argv[2]) on a minimal DOM, with fetch
// answering the OpenAPI document in argv[3], and prints what it rendered
// as JSON: the title, how many operations and schemas, and the error
// message it shows when rendering failed (null otherwise).
const fs = require("fs");
class Node {
  constructor(tag) { this.tag = tag; this.children = []; this.textContent = ""; this.className = ""; this.id = ""; this.href = ""; }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  insertRow() { const row = new Node("tr"); this.children.push(row); return row; }
  insertCell() { const cell = new Node("td"); this.children.push(cell); return cell; }
}
const ids = {};
for (const id of ["title", "summary", "version", "tags", "operations", "schemas"]) ids[id] = new Node("div");
global.document = { createElement: (tag) => new Node(tag), getElementById: (id) => ids[id] };
global.window = { document: global.document };
const spec = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
global.fetch = () => Promise.resolve({ json: () => Promise.resolve(spec) });
require(process.argv[2]);
setTimeout(() => {
  const count = (node, tag) => (node.tag === tag ? 1 : 0) + node.children.reduce((n, c) => n + count(c, tag), 0);
  console.log(JSON.stringify({ title: ids.title.textContent, operations: count(ids.operations, "details"), schemas: count(ids.schemas, "pre"), error: ids.operations.children.length === 1 && ids.operations.children[0].tag === "p" ? ids.operations.children[0].textContent : null }));
}, 50);
