/* pqlkit nudges: shows the user's oldest open nudge and posts what they did with it.
 *
 * <script type="application/json" id="pqlkit-nudges">...</script>   (nudges_script(): no round trip)
 * <script src="/pqlkit/nudges.js" data-endpoint="/pqlkit/nudges" defer></script>
 *
 * Without the embedded data it GETs data-endpoint. It posts "seen" when it shows a nudge,
 * "clicked" (then follows payload.url, if any) or "dismissed" from its buttons, to
 * POST {endpoint}/{key}/{action}. data-csrf-token, else Django's csrftoken cookie, is sent
 * as X-CSRFToken. Text goes in with textContent only. Style it with .pqlkit-nudge.
 * window.pqlkitNudges.mark(key, action) posts a mark from your own code.
 */
(function () {
  "use strict";
  var me = document.currentScript;
  var endpoint = (me && me.getAttribute("data-endpoint")) || "/pqlkit/nudges";
  var token = me && me.getAttribute("data-csrf-token");

  function csrf() {
    if (token) return token;
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function mark(key, action) {
    var headers = { Accept: "application/json" };
    var t = csrf();
    if (t) headers["X-CSRFToken"] = t;
    var url = endpoint + "/" + encodeURIComponent(key) + "/" + encodeURIComponent(action);
    // keepalive: a click that navigates away still delivers its mark
    return fetch(url, { method: "POST", headers: headers, credentials: "same-origin", keepalive: true });
  }

  function load() {
    var data = document.getElementById("pqlkit-nudges");
    if (data) {
      try {
        return Promise.resolve(JSON.parse(data.textContent || "[]"));
      } catch (e) {
        return Promise.resolve([]);
      }
    }
    return fetch(endpoint, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { nudges: [] }; })
      .then(function (body) { return body.nudges || []; });
  }

  function element(tag, cls, text) {
    var el = document.createElement(tag);
    el.className = cls;
    if (text) el.textContent = String(text);
    return el;
  }

  function show(nudge) {
    var p = nudge.payload || {};
    var box = element("div", "pqlkit-nudge", null);
    box.setAttribute("role", "dialog");
    box.setAttribute("data-key", nudge.key);
    if (p.title) box.appendChild(element("strong", "pqlkit-nudge-title", p.title));
    if (p.body) box.appendChild(element("p", "pqlkit-nudge-body", p.body));
    var go = element("button", "pqlkit-nudge-click", p.cta || "OK");
    var close = element("button", "pqlkit-nudge-dismiss", p.dismiss || "Dismiss");
    go.type = close.type = "button";
    go.addEventListener("click", function () {
      box.remove();
      var sent = mark(nudge.key, "clicked");
      var to = p.url ? new URL(String(p.url), window.location.href) : null;
      // only web links: a payload's "javascript:" URL is never followed
      if (to && (to.protocol === "https:" || to.protocol === "http:")) {
        sent.then(function () { window.location.assign(to.href); });
      }
    });
    close.addEventListener("click", function () {
      box.remove();
      mark(nudge.key, "dismissed");
    });
    box.appendChild(go);
    box.appendChild(close);
    document.body.appendChild(box);
    if (!nudge.seen_at) mark(nudge.key, "seen");
  }

  function start() {
    load().then(function (nudges) {
      if (Array.isArray(nudges) && nudges.length) show(nudges[0]);
    });
  }

  window.pqlkitNudges = { mark: mark };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
