// The API reference, rendered from /openapi.json with textContent only (no CDN).
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function schemaText(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return `array of ${schemaText(schema.items)}`;
  if (schema.anyOf) return schema.anyOf.map(schemaText).join(" | ");
  return schema.format ? `${schema.type} (${schema.format})` : (schema.type || "");
}

async function render() {
  const root = document.getElementById("reference");
  const spec = await (await fetch("/openapi.json")).json();
  root.replaceChildren();
  root.append(el("p", `${spec.info.title} ${spec.info.version}: ${spec.info.description || ""}`));
  for (const [path, operations] of Object.entries(spec.paths)) {
    for (const [verb, operation] of Object.entries(operations)) {
      const section = el("section", undefined, "operation");
      section.append(el("h2", `${verb.toUpperCase()} ${path}`));
      if (operation.summary) section.append(el("p", operation.summary));
      const parameters = operation.parameters || [];
      const body = operation.requestBody && operation.requestBody.content;
      const form = body && body["multipart/form-data"] && body["multipart/form-data"].schema;
      const rows = parameters.map((p) => [p.name, `${p.in}, ${schemaText(p.schema)}`,
                                          p.description || ""]);
      if (form) {
        for (const [name, field] of Object.entries(form.properties || {})) {
          const required = (form.required || []).includes(name) ? ", required" : "";
          rows.push([name, `form field, ${schemaText(field)}${required}`, field.description || ""]);
        }
      }
      if (rows.length) {
        const table = el("table");
        const head = el("tr");
        for (const title of ["name", "where, type", "what"]) head.append(el("th", title));
        table.append(head);
        for (const row of rows) {
          const line = el("tr");
          for (const cell of row) line.append(el("td", cell));
          table.append(line);
        }
        section.append(table);
      }
      root.append(section);
    }
  }
}

render().catch((error) => {
  document.getElementById("reference").textContent = `cannot read /openapi.json: ${error}`;
});
