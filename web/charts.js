// tsbroker status page: the farm over time (GET /api/v1/history) drawn with
// uPlot (web/vendor/, MIT). Three charts: sessions per server, logons and
// refusals per minute, n+1 headroom. app.js calls TsbCharts.render(history)
// at each refresh; a chart is made once and re-made only when its series
// change (a server added or removed), else given the new data.
'use strict';

window.TsbCharts = (function () {
  const COLORS = ['#3b6fd8', '#e07b39', '#2e9e6b', '#b04ad8', '#d8b43b', '#3bb8d8', '#d83b6f', '#6b6b6b'];
  const charts = {};     // id -> { plot, key }

  function make(id, title, series, data) {
    const box = document.getElementById(id);
    const key = series.map((s) => s.label).join('\n');
    const c = charts[id];
    if (c && c.key === key) { c.plot.setData(data); return; }
    if (c) c.plot.destroy();
    const width = Math.max(260, box.clientWidth || 400);
    const plot = new window.uPlot({
      width, height: 180, title,
      scales: { x: { time: true } },
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 2,
        points: { show: data[0].length < 60 },
      }))],
      axes: [{}, { size: 40 }],
    }, data, box);
    charts[id] = { plot, key };
  }

  function describe(id, text) {
    document.getElementById(id).setAttribute('aria-label', text);
  }

  function render(h) {
    const samples = h.samples || [];
    const xs = samples.map((s) => s.ts / 1000);
    const names = [...new Set(samples.flatMap((s) => Object.keys(s.servers)))].sort();
    const load = (s, n) => {
      const v = s.servers[n];
      return v ? v.active + v.disconnected + v.pending : null;
    };
    make('chart-sessions', 'Sessions per server',
      names.map((n) => ({ label: n })), [xs, ...names.map((n) => samples.map((s) => load(s, n)))]);
    const perMin = (s, k) => s[k] * 60000 / s.span_ms;
    make('chart-logons', 'Logons and refusals per minute',
      [{ label: 'logons' }, { label: 'reconnects', color: '#2e9e6b' }, { label: 'refusals', color: '#d83b3b' }],
      [xs, samples.map((s) => perMin(s, 'logons')), samples.map((s) => perMin(s, 'reconnects')),
        samples.map((s) => perMin(s, 'refusals'))]);
    make('chart-headroom', 'N+1 headroom', [{ label: 'headroom', color: '#3b6fd8' }],
      [xs, samples.map((s) => s.headroom)]);
    const last = samples[samples.length - 1];
    const n = samples.length;
    setCount(n);
    describe('chart-sessions', last ? `Sessions per server, ${n} samples; last: ${names.map((k) => `${k} ${load(last, k) ?? 0}`).join(', ')}` : 'No samples yet');
    describe('chart-logons', last ? `Logons and refusals per minute, ${n} samples; last: ${perMin(last, 'logons')} logons, ${perMin(last, 'refusals')} refusals` : 'No samples yet');
    describe('chart-headroom', last ? `N+1 headroom, ${n} samples; last: ${last.headroom}` : 'No samples yet');
  }

  function setCount(n) {
    const e = document.getElementById('history-count');
    e.textContent = `${n} sample${n === 1 ? '' : 's'}`;
    document.body.dataset.historySamples = String(n);
  }

  return { render };
})();
