// fusion-ui: the copy buttons of the transcript page. Our own code, served from the binary
// like the stylesheet (the Content-Security-Policy runs no inline script and no inline
// event handler), and listening on the document, so the buttons of messages htmx inserts
// later ("Load earlier messages") work as well as the first ones.
//
// A button copies the exact stored text (markdown as written, arguments and output as
// stored, the raw JSON), not the rendered page. Its attributes say where that text is:
// - `data-copy-message="N" data-copy-field="F"`: field F (a dotted path such as
//   `tool_calls.0.function.arguments`; empty for the whole) of message N's stored JSON,
//   read from that message's "raw JSON" block in the page. The JSON is exact there (it
//   escapes every control character), so the page carries each text once, not once more
//   per button;
// - `data-copy="..."`: the text itself as a JSON string, for text no message on the page
//   holds. JSON because HTML parsing turns a carriage return into a line feed even inside
//   an attribute; JSON spells it `\r`.
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

  // The text `button` copies; not a string when its message is not on the page.
  function storedText(button) {
    const data = button.dataset;
    if (data.copy !== undefined) return JSON.parse(data.copy);
    const raw = document.querySelector("#m" + data.copyMessage + " > details.raw > pre");
    if (!raw) return null;
    if (!data.copyField) return raw.textContent;
    const stored = JSON.parse(raw.textContent);
    return data.copyField.split(".").reduce((value, key) => value && value[key], stored);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-copy], button[data-copy-message]");
    if (!button) return;
    let text = null;
    try {
      text = storedText(button);
    } catch (_) {
      // A raw block that is not JSON (a message that could not be shown as JSON).
    }
    if (typeof text !== "string") {
      say(button, "Cannot copy");
      return;
    }
    if (!(window.isSecureContext && navigator.clipboard)) {
      selectForKeyboard(button, text, "Selected");
      return;
    }
    navigator.clipboard.writeText(text).then(
      () => say(button, "Copied"),
      () => selectForKeyboard(button, text, "No clipboard access")
    );
  });
})();
