// Officers' pages, progressive enhancement: the arrivals page follows new arrivals through
// Server-Sent Events (the page works without this script: a list and a refresh link).
(function () {
  "use strict";

  var live = document.getElementById("arrivals-live");
  var table = document.getElementById("arrivals");
  if (!live || !table || !window.EventSource) { return; }
  var body = table.querySelector("tbody");
  var empty = document.getElementById("no-arrivals");
  var source = new EventSource(live.getAttribute("data-stream"));

  function cell(tag, text, cls) {
    var el = document.createElement(tag);
    if (text !== undefined && text !== null) { el.textContent = text; }
    if (cls) { el.className = cls; }
    return el;
  }

  source.addEventListener("state", function (ev) {
    live.textContent = live.getAttribute(ev.data === "ok" ? "data-live-text" : "data-down-text");
    live.setAttribute("data-state", ev.data);
  });

  source.addEventListener("arrival", function (ev) {
    var a = JSON.parse(ev.data);
    if (body.querySelector('tr[data-arrival="' + a.id + '"]')) { return; }
    var row = document.createElement("tr");
    row.setAttribute("data-arrival", a.id);
    row.className = "decision-" + a.decision + " new";
    var at = cell("td");
    var time = cell("time", a.at_text);
    time.setAttribute("datetime", a.at);
    at.appendChild(time);
    row.appendChild(at);
    row.appendChild(cell("td", a.lbcp));
    var vrn = cell("td");
    vrn.appendChild(cell("strong", a.vrn));
    row.appendChild(vrn);
    row.appendChild(cell("td", a.decision_text + (a.until_text ? " (" + a.until_text + ")" : ""), "decision"));
    row.appendChild(cell("td", a.reason));
    body.insertBefore(row, body.firstChild);
    if (empty) { empty.hidden = true; }
    while (body.rows.length > 200) { body.deleteRow(body.rows.length - 1); }
  });

  source.addEventListener("error", function () {
    // EventSource reconnects by itself after a dropped stream (readyState CONNECTING); a refused
    // one (CLOSED) stays off: say so, the list and the refresh link still work.
    if (source.readyState === EventSource.CLOSED) {
      live.textContent = live.getAttribute("data-off-text");
      live.setAttribute("data-state", "off");
    }
  });
})();
