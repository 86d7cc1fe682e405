// One Containarium daemon: REST calls with the bearer token in a header, the event stream
// read with fetch (EventSource cannot send headers), and the terminal WebSocket (the token
// travels in the Sec-WebSocket-Protocol header, never in the URL).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Server {
  constructor({ id, name, url, token }) {
    this.id = id;
    this.name = name;
    this.url = url.replace(/\/+$/, "");
    this.token = token;
  }

  async call(method, path, body, raw = false) {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "unavailable", `cannot reach ${this.url}: ${e.message}`);
    }
    const text = await response.text();
    if (raw && response.ok) return text;
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    if (!response.ok) {
      throw new ApiError(response.status, json?.error?.code ?? "error", json?.error?.message ?? `${response.status} ${text.slice(0, 200)}`);
    }
    return json ?? text;
  }

  get(path) { return this.call("GET", path); }
  /** The answer's text as it is (a CSV export, say); errors as for `call`. */
  getText(path) { return this.call("GET", path, undefined, true); }
  post(path, body) { return this.call("POST", path, body); }
  put(path, body) { return this.call("PUT", path, body); }
  del(path) { return this.call("DELETE", path); }

  /** Follow /v1/events until `signal` aborts; calls onEvent(type, event). Reconnects with backoff. */
  async follow(onEvent, onState, signal) {
    let delay = 500;
    while (!signal.aborted) {
      try {
        const response = await fetch(this.url + "/v1/events", { headers: { Authorization: `Bearer ${this.token}` }, signal, cache: "no-store" });
        if (!response.ok) throw new ApiError(response.status, "stream", `event stream: ${response.status}`);
        onState(true);
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let type = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) type = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (data) {
              try { onEvent(type, JSON.parse(data)); } catch { /* ignore a malformed event */ }
            }
          }
        }
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) { onState(false, e); return; }
      }
      onState(false);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15_000);
    }
  }

  /** The WebSocket URL and subprotocols of a VM's screen (raw RFB bytes, for noVNC). */
  vnc(username) {
    const ws = new URL(this.url + `/v1/containers/${encodeURIComponent(username)}/vnc`);
    ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
    return { url: ws.toString(), protocols: ["containarium.v1", `bearer.${this.token}`] };
  }

  terminal(username, cols, rows) {
    const ws = new URL(this.url + `/v1/containers/${encodeURIComponent(username)}/terminal?cols=${cols}&rows=${rows}`);
    ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(ws, ["containarium.v1", `bearer.${this.token}`]);
    socket.binaryType = "arraybuffer";
    return socket;
  }
}
