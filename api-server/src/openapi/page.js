// Renders /openapi.json as a page. Text from the document is only ever
// set as text (textContent), never parsed as markup.
"use strict";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function schemaName(schema) {
  const ref = schema && (schema.$ref || (schema.items && schema.items.$ref));
  if (!ref) return null;
  const name = ref.split("/").pop();
  return schema.items ? name + "[]" : name;
}

function schemaLink(schema) {
  const name = schemaName(schema);
  if (!name) return element("code", JSON.stringify(schema || {}));
  const link = element("a", name);
  link.href = "#schema-" + name.replace("[]", "");
  return link;
}

function contentTable(content) {
  const table = element("table");
  for (const [media, body] of Object.entries(content || {})) {
    const row = table.insertRow();
    row.insertCell().append(element("code", media));
    row.insertCell().append(schemaLink(body.schema));
  }
  return table;
}

function resolve(document, response) {
  if (response && response.$ref) return document.components.responses[response.$ref.split("/").pop()];
  return response;
}

function renderOperation(document, path, method, operation) {
  const details = element("details", undefined, "operation");
  const summary = element("summary");
  summary.append(element("span", method, "method " + method), element("span", path, "path"), element("span", operation.summary, "muted"));
  details.append(summary);
  const body = element("div");
  if (operation.description) body.append(element("p", operation.description, "description"));
  const parameters = operation.parameters || [];
  if (parameters.length) {
    body.append(element("h4", "Parameters"));
    const table = element("table");
    for (const parameter of parameters) {
      const row = table.insertRow();
      row.insertCell().append(element("code", parameter.name));
      row.insertCell().append(element("span", parameter.in + (parameter.required ? ", required" : "")));
      row.insertCell().append(element("span", parameter.description || ""));
    }
    body.append(table);
  }
  if (operation.requestBody) {
    body.append(element("h4", "Body"), element("p", operation.requestBody.description || ""), contentTable(operation.requestBody.content));
  }
  body.append(element("h4", "Responses"));
  const table = element("table");
  for (const [status, raw] of Object.entries(operation.responses || {})) {
    const response = resolve(document, raw) || {};
    const row = table.insertRow();
    row.insertCell().append(element("strong", status));
    row.insertCell().append(element("span", response.description || ""));
    row.insertCell().append(contentTable(response.content));
  }
  body.append(table);
  details.append(body);
  return details;
}

function render(document) {
  window.document.getElementById("title").textContent = document.info.title;
  window.document.getElementById("summary").textContent = document.info.description || "";
  window.document.getElementById("version").textContent = "version " + document.info.version + ", OpenAPI " + document.openapi;
  const byTag = new Map((document.tags || []).map((tag) => [tag.name, { tag, operations: [] }]));
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      const name = (operation.tags || ["other"])[0];
      if (!byTag.has(name)) byTag.set(name, { tag: { name }, operations: [] });
      byTag.get(name).operations.push([path, method, operation]);
    }
  }
  const main = window.document.getElementById("operations");
  const nav = window.document.getElementById("tags");
  main.replaceChildren();
  for (const { tag, operations } of byTag.values()) {
    const link = element("a", tag.name);
    link.href = "#tag-" + tag.name;
    nav.append(link);
    const heading = element("h2", tag.name);
    heading.id = "tag-" + tag.name;
    main.append(heading, element("p", tag.description || "", "muted"));
    for (const [path, method, operation] of operations) main.append(renderOperation(document, path, method, operation));
  }
  const schemas = window.document.getElementById("schemas");
  schemas.append(element("h2", "Schemas"));
  for (const [name, schema] of Object.entries(document.components.schemas || {})) {
    const heading = element("h3", name);
    heading.id = "schema-" + name;
    schemas.append(heading, element("pre", JSON.stringify(schema, null, 2)));
  }
}

fetch("/openapi.json")
  .then((response) => response.json())
  .then(render)
  .catch((error) => {
    window.document.getElementById("operations").replaceChildren(element("p", "The description could not be loaded: " + error));
  });
