// The API key prompt. The key is kept in memory; in sessionStorage (this tab only) if the user asks.

export function keyPrompt() {
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const remember = document.getElementById("key-remember");
  const reason = document.getElementById("key-reason");
  let pending = null;
  let api = null;

  function finish(key) {
    const resolve = pending;
    pending = null;
    if (dialog.open) dialog.close();
    if (key) api.setKey(key, remember.checked);
    if (resolve) resolve(key);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    finish(input.value.trim() || null);
  });
  document.getElementById("key-cancel").addEventListener("click", () => finish(null));
  dialog.addEventListener("cancel", () => finish(null));

  /** Show the prompt (once at a time); resolves to the key or null. */
  function ask(message) {
    if (pending) return pendingPromise;
    reason.textContent = message || "This server needs an API key.";
    input.value = "";
    remember.checked = !!sessionStorage.getItem("asr-api-key");
    pendingPromise = new Promise((resolve) => {
      pending = resolve;
    });
    dialog.showModal();
    input.focus();
    return pendingPromise;
  }
  let pendingPromise = null;

  return {
    ask,
    bind(theApi) {
      api = theApi;
      const button = document.getElementById("key-button");
      const show = () => {
        button.hidden = !api.key;
        button.textContent = api.key ? "Change API key" : "API key";
      };
      api.onKeyChange = show;
      show();
      button.addEventListener("click", () => ask("Enter another API key."));
    },
  };
}
