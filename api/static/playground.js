// The playground (api/templates/playground.html): lists the models a key may use and streams a
// chat answer into the page with fetch() and a ReadableStream over /v1/chat/completions. The
// page acts as the chosen key through the session cookie and X-Switchyard-Key; the CSRF token
// goes in X-CSRF-Token. The project's own script: no framework, no CDN.
"use strict";

(function () {
  const form = document.getElementById("playground");
  if (!form) return;
  const csrf = form.dataset.csrf;
  const keySelect = document.getElementById("pg-key");
  const modelSelect = document.getElementById("pg-model");
  const message = document.getElementById("pg-message");
  const send = document.getElementById("pg-send");
  const stop = document.getElementById("pg-stop");
  const answer = document.getElementById("pg-answer");
  const errorBox = document.getElementById("pg-error");
  const meta = document.getElementById("pg-meta");
  let controller = null;

  function headers(extra) {
    return Object.assign({ "X-Switchyard-Key": keySelect.value, Accept: "application/json" }, extra || {});
  }

  function showError(status, text) {
    errorBox.textContent = status ? `${status}: ${text}` : text;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  // The API's own message, whatever its dialect's error shape.
  async function apiMessage(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      const err = body.error;
      if (err && typeof err === "object" && err.message) return err.message;
      if (body.message) return body.message;
      if (typeof err === "string") return err;
    } catch (e) {
      // not JSON: the text itself
    }
    return text || response.statusText;
  }

  async function loadModels() {
    const wanted = modelSelect.value;
    modelSelect.disabled = true;
    try {
      const response = await fetch("/v1/models", { headers: headers(), credentials: "same-origin" });
      if (!response.ok) {
        showError(response.status, await apiMessage(response));
        modelSelect.replaceChildren(new Option("no models", ""));
        return;
      }
      clearError();
      const ids = (await response.json()).data.map((m) => m.id).sort();
      modelSelect.replaceChildren(...ids.map((id) => new Option(id, id, false, id === wanted)));
      if (!ids.length) modelSelect.replaceChildren(new Option("this key may use no model", ""));
    } catch (err) {
      showError(0, `cannot list the models: ${err.message}`);
    } finally {
      modelSelect.disabled = false;
    }
  }

  // One server-sent event's data: a chunk's delta, an error object, or the end.
  function handleEvent(data) {
    if (data === "[DONE]") return true;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch (e) {
      return false;
    }
    if (chunk.error) {
      showError(0, chunk.error.message || JSON.stringify(chunk.error));
      return true;
    }
    for (const choice of chunk.choices || []) {
      const piece = choice.delta && choice.delta.content;
      if (piece) answer.textContent += piece;
    }
    if (chunk.usage) meta.textContent += ` · ${chunk.usage.total_tokens} tokens`;
    return false;
  }

  async function readStream(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = event
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data && handleEvent(data)) {
          await reader.cancel();
          return;
        }
      }
    }
  }

  async function sendMessage(event) {
    event.preventDefault();
    if (!message.value.trim() || !modelSelect.value) {
      showError(0, !modelSelect.value ? "choose a model" : "type a message");
      return;
    }
    clearError();
    answer.textContent = "";
    meta.textContent = "";
    answer.setAttribute("aria-busy", "true");
    send.disabled = true;
    stop.disabled = false;
    controller = new AbortController();
    const body = {
      model: modelSelect.value,
      messages: [{ role: "user", content: message.value }],
      stream: true,
    };
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", "X-CSRF-Token": csrf }),
        body: JSON.stringify(body),
        credentials: "same-origin",
        signal: controller.signal,
      });
      const jobId = response.headers.get("x-job-id");
      if (jobId) {
        const link = document.createElement("a");
        link.href = `/jobs/${encodeURIComponent(jobId)}`;
        link.textContent = jobId;
        link.id = "pg-job";
        meta.replaceChildren("job ", link);
      }
      if (!response.ok) {
        showError(response.status, await apiMessage(response));
        return;
      }
      if ((response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        await readStream(response);
      } else {
        // A 202: the wait bound passed; the job goes on and its page shows the answer.
        const accepted = await response.json();
        showError(response.status, `still running: see job ${accepted.id || jobId}`);
      }
    } catch (err) {
      if (err.name !== "AbortError") showError(0, `the request failed: ${err.message}`);
    } finally {
      answer.setAttribute("aria-busy", "false");
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  }

  keySelect.addEventListener("change", loadModels);
  form.addEventListener("submit", sendMessage);
  stop.addEventListener("click", () => controller && controller.abort());
  loadModels();
})();
