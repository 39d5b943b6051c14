// atcr web UI: theme toggle (persisted in localStorage and a cookie, so the server could
// render the right theme too) and copy-to-clipboard buttons. No framework, no build step.
(function () {
  var root = document.documentElement;
  function apply(theme) {
    if (theme === "light" || theme === "dark") root.setAttribute("data-theme", theme);
    else root.removeAttribute("data-theme");
  }
  var saved = null;
  try { saved = localStorage.getItem("atcr-theme"); } catch (e) {}
  apply(saved);
  document.addEventListener("click", function (ev) {
    var t = ev.target.closest("[data-theme-toggle]");
    if (t) {
      // Each click flips what is shown. An override is kept only while it differs from the
      // system's scheme, so flipping back to the system's look means "follow the system"
      // again (and a later change of the system's scheme is followed).
      var systemDark = matchMedia("(prefers-color-scheme: dark)").matches;
      var shown = root.getAttribute("data-theme");
      var dark = shown === "dark" || (!shown && systemDark);
      var next = dark ? "light" : "dark";
      var follow = (next === "dark") === systemDark;
      apply(follow ? null : next);
      try {
        if (follow) localStorage.removeItem("atcr-theme");
        else localStorage.setItem("atcr-theme", next);
      } catch (e) {}
      document.cookie = follow
        ? "atcr_theme=; path=/; max-age=0; samesite=lax"
        : "atcr_theme=" + next + "; path=/; max-age=31536000; samesite=lax";
      t.setAttribute("aria-pressed", next === "dark" ? "true" : "false");
      return;
    }
    var c = ev.target.closest("[data-copy]");
    if (c) {
      var text = c.getAttribute("data-copy");
      var done = function () { var old = c.textContent; c.textContent = "Copied"; setTimeout(function () { c.textContent = old; }, 1500); };
      // Over plain HTTP (not localhost) there is no Clipboard API: copy from a hidden field.
      var fallback = function () {
        var t = document.createElement("textarea");
        t.value = text;
        t.setAttribute("readonly", "");
        t.className = "copy-buffer";
        document.body.appendChild(t);
        t.select();
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) {}
        document.body.removeChild(t);
        if (ok) done();
      };
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
      else fallback();
    }
  });
})();
