// Progressive enhancement for the ROCARS pages: every page works without this script.
(function () {
  "use strict";

  // Error summary: focus it so keyboard and screen-reader users land on the problem.
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }

  // Confirm destructive forms (cancel a consignment or a bundle).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
    });
  });

  // Copy and print the CCRN.
  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    if (!navigator.clipboard) { return; }
    btn.hidden = false;
    btn.addEventListener("click", function () {
      navigator.clipboard.writeText(btn.getAttribute("data-copy")).then(function () {
        var out = document.querySelector(".copied");
        if (out) { out.textContent = out.getAttribute("data-copied-text"); }
      });
    });
  });
  document.querySelectorAll("[data-print]").forEach(function (btn) {
    btn.hidden = false;
    btn.addEventListener("click", function () { window.print(); });
  });

  // Batch upload with a progress bar; the answer page replaces this one.
  document.querySelectorAll("form[data-upload]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.XMLHttpRequest || !window.FormData) { return; }
      ev.preventDefault();
      var box = form.querySelector(".progress");
      var bar = form.querySelector("progress");
      box.hidden = false;
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          var pct = Math.round((e.loaded / e.total) * 100);
          bar.value = pct;
          bar.textContent = pct + "%";
        }
      });
      xhr.addEventListener("load", function () {
        var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var main = doc.getElementById("main");
        if (main) {
          document.getElementById("main").replaceWith(main);
          main.focus();
          if (window.ROCARS_init) { window.ROCARS_init(); }
        } else {
          form.submit();
        }
      });
      xhr.addEventListener("error", function () { form.submit(); });
      xhr.send(new FormData(form));
    });
  });

  // The trucker's countdown: "Cross after 14:32" turns into "Cross now" when the wait is over.
  var instr = document.getElementById("instruction");
  var countdown = document.getElementById("countdown");
  if (instr && countdown) {
    var notBefore = Date.parse(instr.getAttribute("data-not-before"));
    var tick = function () {
      var left = Math.max(0, Math.round((notBefore - Date.now()) / 1000));
      countdown.textContent = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
      if (left <= 0) {
        instr.className = "instruction go";
        document.getElementById("instruction-text").textContent = instr.getAttribute("data-now-text");
        countdown.parentNode.hidden = true;
        return;
      }
      window.setTimeout(tick, 1000);
    };
    tick();
  }

  // The status page refreshes its content in place (no page reload, focus kept).
  var live = document.getElementById("status-live");
  if (live && window.fetch) {
    var every = parseInt(live.getAttribute("data-refresh"), 10) * 1000;
    var refresh = function () {
      fetch(window.location.pathname, { headers: { "Accept": "text/html" }, cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) {
          if (text) {
            var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("status-live");
            if (fresh) { live.innerHTML = fresh.innerHTML; }
          }
        })
        .catch(function () { /* keep the last content; try again next time */ })
        .then(function () { window.setTimeout(refresh, every); });
    };
    window.setTimeout(refresh, every);
  }
})();
