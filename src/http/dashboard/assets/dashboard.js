// Hestia's dashboard: keeps the server-rendered pages current from GET /v1/events, sends the
// start/stop forms without leaving the page, and follows a service's log. No framework.
(function () {
  'use strict';
  var body = document.body;
  var only = body.dataset.only || '';
  var kinds = (body.dataset.kinds || '').split(' ').filter(Boolean);

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $$(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function rows(service) {
    return $$('[data-service]').filter(function (el) { return el.dataset.service === service; });
  }
  function text(value) { return value === null || value === undefined || value === '' ? '-' : String(value); }
  function setField(root, field, value) {
    $$('[data-field="' + field + '"]', root).forEach(function (cell) {
      if (field === 'state') {
        var badge = $('.state', cell) || cell;
        badge.textContent = value;
        badge.className = 'state ' + value;
      } else {
        cell.textContent = text(value);
      }
    });
  }
  function apply(service, status) {
    rows(service).forEach(function (row) {
      if (status.state !== undefined) { setField(row, 'state', status.state); row.dataset.state = status.state; }
      if (status.queuePending !== undefined) { setField(row, 'queue', status.queuePending); }
      if (status.inFlight !== undefined) { setField(row, 'inflight', status.inFlight); row.dataset.inFlight = status.inFlight; }
      if (status.machineId !== undefined) { setField(row, 'machine', status.machineId); }
      if (status.lastError !== undefined) { setField(row, 'error', status.lastError); }
      if (status.lastUsedAt !== undefined) {
        row.dataset.lastUsed = status.lastUsedAt || '';
        setField(row, 'lastused', status.lastUsedAt ? new Date(status.lastUsedAt).toLocaleTimeString() : '-');
      }
    });
    countdown();
  }

  // A full status read after activity, at most one per service every 300 ms.
  var pending = {};
  function refresh(service) {
    if (pending[service]) { return; }
    pending[service] = setTimeout(function () {
      delete pending[service];
      fetch('/v1/services/' + encodeURIComponent(service) + '/status', { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (status) { if (status) { apply(service, status); } })
        .catch(function () {});
    }, 300);
  }

  // Time until idle shutdown, from the last use and the service's idle timeout.
  function countdown() {
    $$('[data-service][data-idle-ms]').forEach(function (row) {
      var idle = Number(row.dataset.idleMs);
      var cell = $('[data-field="idle"]', row);
      if (!cell) { return; }
      if (row.dataset.state !== 'ready' || !idle) { cell.textContent = idle ? '-' : 'never'; return; }
      if (Number(row.dataset.inFlight || 0) > 0) { cell.textContent = 'busy'; return; }
      var last = Date.parse(row.dataset.lastUsed || '');
      if (isNaN(last)) { cell.textContent = '-'; return; }
      var left = Math.max(0, Math.round((last + idle - Date.now()) / 1000));
      cell.textContent = left >= 60 ? Math.floor(left / 60) + 'm ' + (left % 60) + 's' : left + 's';
    });
  }
  setInterval(countdown, 1000);
  countdown();

  function flash(message) {
    var box = $('#flash');
    if (!box) { return; }
    box.textContent = message;
    setTimeout(function () { if (box.textContent === message) { box.textContent = ''; } }, 6000);
  }

  // The start/stop forms are sent in the background; the event stream shows what follows.
  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!form.matches('form[data-live]')) { return; }
    event.preventDefault();
    fetch(form.action, {
      method: 'POST',
      body: new URLSearchParams(new FormData(form)),
      credentials: 'same-origin',
      redirect: 'manual'
    }).then(function (response) {
      if (response.type === 'opaqueredirect' || response.ok) { return; }
      return response.json().then(function (problem) {
        flash((problem.title || 'Error') + ': ' + (problem.detail || response.status));
      }, function () { flash('The action failed (' + response.status + ')'); });
    }).catch(function (error) { flash('Hestia could not be reached: ' + error); });
  });

  // The service page's timeline: newest first.
  function timeline(event) {
    var list = $('#timeline');
    if (!list || (only && event.serviceId !== only)) { return; }
    var item = document.createElement('li');
    var time = document.createElement('time');
    time.textContent = new Date(event.at).toLocaleTimeString();
    var kind = document.createElement('span');
    kind.className = 'kind';
    kind.textContent = event.type;
    var detail = document.createElement('span');
    detail.className = 'muted';
    detail.textContent = event.detail && typeof event.detail === 'object'
      ? Object.keys(event.detail).map(function (k) {
          var v = event.detail[k];
          return k + '=' + (typeof v === 'string' ? v : JSON.stringify(v));
        }).join(' ')
      : '';
    item.appendChild(time); item.appendChild(kind); item.appendChild(detail);
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 200) { list.removeChild(list.lastChild); }
  }

  if (window.EventSource && $('[data-service]')) {
    var live = $('#live');
    var source = new EventSource('/v1/events' + (only ? '?service=' + encodeURIComponent(only) : ''));
    source.onopen = function () { if (live) { live.textContent = 'live'; live.className = 'muted'; } };
    source.onerror = function () { if (live) { live.textContent = 'reconnecting…'; live.className = 'error'; } };
    source.addEventListener('state', function (e) {
      var change = JSON.parse(e.data);
      apply(change.serviceId, {
        state: change.to, queuePending: change.queuePending, inFlight: change.inFlight,
        machineId: change.machineId, lastError: change.lastError
      });
      refresh(change.serviceId);
    });
    source.addEventListener('queue', function (e) {
      var depth = JSON.parse(e.data);
      apply(depth.serviceId, { queuePending: depth.queuePending, inFlight: depth.inFlight });
    });
    kinds.forEach(function (kind) {
      source.addEventListener(kind, function (e) {
        var event = JSON.parse(e.data);
        timeline(event);
        if (event.serviceId) { refresh(event.serviceId); }
      });
    });
  }

  // The service page's log tail, with follow.
  var log = $('#log');
  if (log) {
    var follow = $('#follow');
    var load = function () {
      fetch('/v1/services/' + encodeURIComponent(log.dataset.log) + '/logs?lines=200', { credentials: 'same-origin' })
        .then(function (r) {
          if (!r.ok) { return r.json().then(function (p) { return '(' + (p.detail || p.title) + ')'; }, function () { return '(no log: ' + r.status + ')'; }); }
          var type = r.headers.get('content-type') || '';
          return type.indexOf('json') >= 0
            ? r.json().then(function (b) { return (b.lines || []).join('\n'); })
            : r.text();
        })
        .then(function (textValue) {
          var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          log.textContent = textValue || '(empty)';
          if (atEnd || (follow && follow.checked)) { log.scrollTop = log.scrollHeight; }
        })
        .catch(function () {});
    };
    load();
    setInterval(function () { if (!follow || follow.checked) { load(); } }, 2000);
  }
})();
