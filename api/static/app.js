// Switchyard's dashboard: the project's own script (no framework, no CDN). Pages work without it;
// it adds the copy button and a batch's live progress.
"use strict";

function copyButtons() {
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const text = source ? source.textContent.trim() : "";
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (err) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  }
}

const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"]);

function liveBatch() {
  const box = document.querySelector("[data-batch-live]");
  if (!box) return;
  const url = box.dataset.batchLive;
  const field = (name) => box.querySelector(`[data-field="${name}"]`);
  let delay = 1000;
  async function refresh() {
    let batch;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      batch = await response.json();
      delay = 1000;
    } catch (err) {
      delay = Math.min(delay * 2, 15000); // the server is busy or away: ask less often
      setTimeout(refresh, delay);
      return;
    }
    const counts = batch.request_counts;
    const done = counts.completed + counts.failed;
    field("status").textContent = batch.status;
    field("status").className = "badge " + batch.status;
    field("completed").textContent = counts.completed;
    field("failed").textContent = counts.failed;
    field("total").textContent = counts.total;
    const bar = field("progress");
    bar.max = Math.max(counts.total, 1);
    bar.value = done;
    if (TERMINAL.has(batch.status)) {
      const cancel = document.getElementById("batch-cancel");
      if (cancel) cancel.hidden = true;
      return;
    }
    setTimeout(refresh, delay);
  }
  if (!TERMINAL.has(field("status").textContent.trim())) setTimeout(refresh, delay);
}

document.addEventListener("DOMContentLoaded", () => {
  copyButtons();
  liveBatch();
});
