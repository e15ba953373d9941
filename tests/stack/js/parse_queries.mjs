// Parse query expressions with the grammars Grafana and Prometheus use in their own editors.
//
// stdin:  JSON array of {"lang": "logql" | "traceql" | "promql", "query": "..."}
// stdout: JSON array, same order, of {"ok": bool, "errors": [{"from": n, "to": n, "near": "..."}],
//         "top": "<name of the top-level node>",
//         "nodes": [{"type": "<node type>", "from": n, "to": n, "parent": <index in nodes or -1>}]}
// (nodes in tree order, so the Python side can find e.g. every Identifier under a Selector).
//
// A query is ok when the parse tree has no error node (lezer recovers from syntax errors by
// inserting error nodes, so "it returned a tree" alone means nothing).
import { parser as logql } from "@grafana/lezer-logql";
import { parser as traceql } from "@grafana/lezer-traceql";
import { parser as promql } from "@prometheus-io/lezer-promql";

const parsers = { logql, traceql, promql };

function parseOne({ lang, query }) {
  const parser = parsers[lang];
  if (!parser) {
    return { ok: false, errors: [{ from: 0, to: 0, near: `unknown language ${lang}` }], top: "", nodes: [] };
  }
  const tree = parser.parse(query);
  const errors = [];
  const nodes = [];
  const stack = [];
  tree.iterate({
    enter(node) {
      nodes.push({ type: node.type.name, from: node.from, to: node.to, parent: stack.length ? stack[stack.length - 1] : -1 });
      stack.push(nodes.length - 1);
      if (node.type.isError) {
        errors.push({ from: node.from, to: node.to, near: query.slice(Math.max(0, node.from - 10), node.to + 10) });
      }
    },
    leave() {
      stack.pop();
    },
  });
  return { ok: errors.length === 0, errors, top: tree.type.name, nodes };
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  input += chunk;
});
process.stdin.on("end", () => {
  const requests = JSON.parse(input);
  process.stdout.write(JSON.stringify(requests.map(parseOne)));
});
