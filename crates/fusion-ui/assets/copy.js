// fusion-ui: the copy buttons of the transcript page. Our own code, served from the binary
// like the stylesheet (the Content-Security-Policy runs no inline script and no inline
// event handler), and listening on the document, so the buttons of messages htmx inserts
// later ("Load earlier messages") work as well as the first ones.
//
// A button copies the exact stored text (markdown as written, arguments and output as
// stored, the raw JSON), not the rendered page. Its attributes say where that text is:
// `data-copy-from="URL" data-copy-field="F"` is field F (a dotted path such as
// `tool_calls.0.function.arguments`; empty for the whole) of the stored JSON of a message,
// fetched from URL (`GET /sessions/{id}/messages/{n}?generation=G`) when the button is
// pressed. So the page carries each text once, as shown, and nothing more per button; and
// the text is exact, where text inside HTML would have lost its carriage returns.
//
// A "raw JSON" block (`<details data-json-from="URL">`) fetches its message's stored JSON
// the first time it is opened, through one listener for the page: htmx attributes on
// every block cost the page's load 40% more script (docs/performance.md).
//
// The clipboard API exists only in secure contexts (https, or an address on loopback). On
// a plain-http LAN bind there is none, so the text is shown, selected, in a box under the
// button for the user to copy with the keyboard; the button says so. The same happens when
// the browser refuses the clipboard.
"use strict";

(function () {
  // How long the button shows the outcome before its label comes back.
  const FEEDBACK_MS = 4000;
  const COPY_KEYS = /Mac|iPhone|iPad/.test(navigator.platform) ? "\u2318-C" : "Ctrl-C";

  // Each button's own label and pending restore, kept off the DOM.
  const labels = new WeakMap();
  const timers = new WeakMap();

  function say(button, message) {
    if (!labels.has(button)) labels.set(button, button.textContent);
    button.textContent = message;
    clearTimeout(timers.get(button));
    timers.set(button, setTimeout(() => {
      button.textContent = labels.get(button);
    }, FEEDBACK_MS));
  }

  // Shows `text` selected in a box right after the button (reused on the next click), so
  // Ctrl-C copies exactly it. A <pre> and a selection rather than a <textarea>: a
  // textarea's value turns "\r\n" into "\n", a text node keeps it.
  function selectForKeyboard(button, text, why) {
    let box = button.nextElementSibling;
    if (!(box && box.classList.contains("copy-text"))) {
      box = document.createElement("pre");
      box.className = "copy-text";
      box.tabIndex = -1;
      button.after(box);
    }
    box.textContent = text;
    box.focus();
    window.getSelection().selectAllChildren(box);
    say(button, why + ": press " + COPY_KEYS);
  }

  // The text `button` copies; not a string when it cannot be had (the session was
  // deleted or rewritten since the page was read: the server refuses the fetch).
  async function storedText(button) {
    const data = button.dataset;
    const response = await fetch(data.copyFrom, { headers: { Accept: "application/json" } });
    if (!response.ok) return null;
    const json = await response.text();
    if (!data.copyField) return json;
    const stored = JSON.parse(json);
    return data.copyField.split(".").reduce((value, key) => value && value[key], stored);
  }

  // The stored text, or null when it cannot be had.
  async function textOrNull(button) {
    try {
      const text = await storedText(button);
      return typeof text === "string" ? text : null;
    } catch (_) {
      // The server could not be reached, or sent something that is not JSON.
      return null;
    }
  }

  // `toggle` does not bubble: listened for on the way down.
  document.addEventListener(
    "toggle",
    async (event) => {
      const block = event.target;
      if (!(block instanceof HTMLDetailsElement) || !block.open) return;
      const url = block.dataset.jsonFrom;
      const shown = block.querySelector("pre");
      if (!url || !shown) return;
      delete block.dataset.jsonFrom; // once, unless it fails
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (!response.ok) throw new Error("HTTP " + response.status);
        shown.textContent = await response.text();
      } catch (_) {
        // Refused (the session was rewritten or deleted since) or unreachable: the link
        // to the stored JSON stays, and the next opening tries again.
        block.dataset.jsonFrom = url;
      }
    },
    true
  );

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-copy-from]");
    if (!button) return;
    const fetched = textOrNull(button);
    const clipboard = window.isSecureContext && navigator.clipboard;
    let written = null;
    if (clipboard && window.ClipboardItem && navigator.clipboard.write) {
      // Asked for within the click, with the text still on its way: Safari (and Firefox
      // after a few seconds) counts a clipboard write after an awaited fetch as no
      // longer the user's, and refuses it.
      const blob = fetched.then((text) => {
        if (text === null) throw new Error("not copied");
        return new Blob([text], { type: "text/plain" });
      });
      written = navigator.clipboard
        .write([new ClipboardItem({ "text/plain": blob })])
        .then(() => true, () => false);
    }
    const text = await fetched;
    if (text === null) {
      say(button, "Cannot copy: reload the page");
      return;
    }
    if (!clipboard) {
      selectForKeyboard(button, text, "Selected");
      return;
    }
    if (written === null) {
      written = navigator.clipboard.writeText(text).then(() => true, () => false);
    }
    if (await written) {
      say(button, "Copied");
    } else {
      selectForKeyboard(button, text, "No clipboard access");
    }
  });
})();
