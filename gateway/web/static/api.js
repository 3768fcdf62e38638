// The REST API with the page's own client token: the operations that take a supervisor's token
// (docs/api.md), so that no API key ever reaches a browser. A refusal is thrown as an ApiProblem
// that carries the server's own words: its problem document's detail and field errors.

/** A refused call: `code` and `detail` as the server worded them, `errors` its [{field, message}]. */
export class ApiProblem extends Error {
  constructor(status, doc) {
    super(doc.detail || doc.title || String(status));
    this.status = status;
    this.code = doc.code || String(status);
    this.detail = this.message;
    this.errors = Array.isArray(doc.errors) ? doc.errors : [];
  }
}

/** `method path` with `body` as JSON, authenticated with `token`: the answer's JSON (null for 204). */
export async function callApi(token, method, path, body) {
  const init = { method, headers: { authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  if (answer.status === 204) return null;
  let doc;
  try {
    doc = await answer.json();
  } catch {
    doc = { detail: `${answer.status} ${answer.statusText}` };
  }
  if (!answer.ok) throw new ApiProblem(answer.status, doc);
  return doc;
}
