// mstc-flow dashboard: live updates. The pages are whole without this script; it listens to
// /ui/events and re-fetches the fragments an event concerns, replacing them in place.
// [data-live-src] elements name their fragment; [data-live-on] says which notices concern
// them ("*", "job:<requestId>", or "pipeline:<id>"). A list's first page ([data-live-new]) also gains a row
// for a job it does not show yet, if the server says the job matches the list's filters.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-live");
  if (!url || !window.EventSource || !window.fetch) { return; }
  var status = document.getElementById("live-status");
  var pending = new Map();
  var connectedBefore = false;

  function say(text) { if (status) { status.textContent = text; } }

  function replace(el, html) {
    if (el.tagName === "TR") {
      var holder = document.createElement("tbody");
      holder.innerHTML = html.trim();
      var row = holder.firstElementChild;
      if (row) { el.replaceWith(row); }
    } else {
      el.innerHTML = html;
    }
  }

  function refresh(el) {
    var src = el.getAttribute("data-live-src");
    if (el.tagName === "TR") {
      var filters = el.parentElement && el.parentElement.getAttribute("data-live-filters");
      if (filters) { src += "?" + filters; }
    }
    return fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected) { window.location.reload(); return null; }
        return r.status === 200 ? r.text() : null;
      })
      .then(function (html) { if (html !== null && el.isConnected) { replace(el, html); } })
      .catch(function () { /* the next event or reconnect tries again */ });
  }

  // Several events for one element within 250 ms fetch it once.
  function schedule(key, action) {
    if (pending.has(key)) { return; }
    pending.set(key, setTimeout(function () { pending.delete(key); action(); }, 250));
  }

  function addRow(list, requestId) {
    var src = list.getAttribute("data-live-new") + encodeURIComponent(requestId);
    var filters = list.getAttribute("data-live-filters");
    if (filters) { src += "?" + filters; }
    fetch(src, { credentials: "same-origin" })
      .then(function (r) { return r.status === 200 ? r.text() : null; })
      .then(function (html) {
        if (html === null || document.getElementById("job-" + requestId)) { return; }
        var holder = document.createElement("tbody");
        holder.innerHTML = html.trim();
        if (holder.firstElementChild) { list.insertBefore(holder.firstElementChild, list.firstChild); }
      })
      .catch(function () {});
  }

  function concerned(el, note) {
    var on = el.getAttribute("data-live-on");  // none: refreshed only after a reconnect
    if (on === "*" || (note.kind === "job" && on === "job:" + note.requestId)) { return true; }
    // A pipeline page: its own pipeline's events, and any pipeline task's job event (the
    // event names the task's attempt, not the pipeline; a refetch is cheap).
    return on !== null && on.indexOf("pipeline:") === 0 &&
      ((note.kind === "pipeline" && on === "pipeline:" + note.pipelineId) ||
       (note.kind === "job" && note.pipelineTask === true));
  }

  function onNotice(note) {
    document.querySelectorAll("[data-live-src]").forEach(function (el) {
      if (concerned(el, note)) { schedule(el.getAttribute("data-live-src"), function () { refresh(el); }); }
    });
    if (note.kind === "job" && !document.getElementById("job-" + note.requestId)) {
      document.querySelectorAll("[data-live-new]").forEach(function (list) {
        schedule("new:" + note.requestId, function () { addRow(list, note.requestId); });
      });
    }
  }

  var source = new EventSource(url);
  source.onopen = function () {
    say("live");
    // After a reconnect (the flow restarted), events were missed: refresh everything shown.
    if (connectedBefore) { document.querySelectorAll("[data-live-src]").forEach(refresh); }
    connectedBefore = true;
  };
  source.onerror = function () { say("reconnecting…"); };
  source.onmessage = function (event) {
    try { onNotice(JSON.parse(event.data)); } catch (e) { /* not a notice */ }
  };
}());
