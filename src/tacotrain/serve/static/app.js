// The page of `tacotrain serve`: list the checkpoints, send the text, show what came back.
// Every value from the server is put on the page as text (textContent), never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
let listing = { checkpoints: [], limits: {} };

function fmt(value) {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'number' && !Number.isInteger(value)) return value.toFixed(2);
  return String(value);
}

function fixed(value, digits = 2) {
  return typeof value === 'number' ? value.toFixed(digits) : '-';
}

function minutes(seconds) {
  return seconds === null || seconds === undefined ? '-' : `${(seconds / 60).toFixed(1)} min`;
}

function when(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleString();
}

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = !message;
}

function optionLabel(c) {
  const where = c.run ? `${c.run} / ${c.name}` : c.name;
  const step = c.step === null ? '' : `, step ${c.step}`;
  const verdict = c.error ? 'cannot be read' : c.aligned === true ? 'aligned' :
    c.aligned === false ? 'not aligned' : 'no verdict';
  return `${where}${step}, ${when(c.written)}, ${verdict}`;
}

function selected() {
  return listing.checkpoints.find((c) => c.id === $('checkpoint').value);
}

function showCheckpoint() {
  const c = selected();
  $('language').textContent = c ? fmt(c.language) + (c.phonemes ? ' (phonemes)' : '') : '-';
  $('checkpoint-info').textContent = !c ? '' : c.error ? c.error :
    c.step === null ? `written ${when(c.written)}; ${c.verdict}` :
    `step ${fmt(c.step)}, written ${when(c.written)}, trained ${minutes(c.elapsed_seconds)}; ` +
    `verdict: ${c.verdict}`;
}

function updateCount() {
  const limit = listing.limits.max_text_chars;
  const n = $('text').value.length;
  $('count').textContent = limit ? `${n} / ${limit} characters` : '';
}

async function loadCheckpoints() {
  try {
    const res = await fetch('/api/checkpoints');
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    listing = data;
  } catch (err) {
    showError(`The checkpoint list could not be loaded: ${err.message}`);
    return;
  }
  $('source').textContent = `Serving --${listing.source} ${listing.root}`;
  const select = $('checkpoint');
  select.replaceChildren(...listing.checkpoints.map((c) => {
    const opt = document.createElement('option');
    opt.value = c.id;
    opt.textContent = optionLabel(c);
    opt.disabled = Boolean(c.error);
    return opt;
  }));
  if (listing.default) select.value = listing.default;
  if (!listing.checkpoints.length) showError(`No checkpoint in ${listing.root} yet.`);
  showCheckpoint();
  updateCount();
}

function figureRows(f) {
  const verdict = (f.aligned ? 'aligned' : `not aligned: ${(f.reasons || []).join(', ')}`)
    + ' (attention only; content untested)';
  const rows = [
    ['frames', fmt(f.frames)],
    ['seconds of audio', fixed(f.seconds, 3)],
    ['stopped by the gate', fmt(f.stopped_by_gate)],
    ['alignment verdict', verdict, !f.aligned],
    ['skipped / repeated / stalled tokens',
      `${fmt(f.skipped_tokens)} / ${fmt(f.repeated_tokens)} / ${fmt(f.stalled_tokens)}`],
    ['diagonality, focus, coverage',
      `${fixed(f.diagonality)}, ${fixed(f.focus)}, ${fixed(f.coverage)}`],
    ['synthesis time', f.synthesis_seconds === null ? '-' : `${fixed(f.synthesis_seconds, 3)} s`],
    ['real-time factor', fixed(f.rtf, 3)],
  ];
  if (f.pieces) rows.push(['read in pieces', String(f.pieces.length)]);
  return rows;
}

function showResult(data) {
  const body = $('figures').tBodies[0];
  body.replaceChildren(...figureRows(data.figures).map(([name, value, fail]) => {
    const tr = document.createElement('tr');
    tr.dataset.figure = name;
    const th = document.createElement('th');
    th.textContent = name;
    const td = document.createElement('td');
    td.textContent = value;
    if (fail) td.className = 'fail';
    tr.append(th, td);
    return tr;
  }));
  $('audio').src = data.urls.speech;
  $('alignment').src = data.urls.alignment;
  $('mel').src = data.urls.mel;
  $('result').hidden = false;
  $('audio').play().catch(() => {});  // a browser may refuse to autoplay: the player stays
}

async function synthesise() {
  const text = $('text').value;
  const button = $('synthesise');
  showError('');
  button.disabled = true;
  $('status').textContent = 'Synthesising...';
  try {
    const res = await fetch('/api/synthesize', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ text, checkpoint: $('checkpoint').value || null }),
    });
    let data;
    try {
      data = await res.json();
    } catch {
      data = { error: `the server answered ${res.status} ${res.statusText}` };
    }
    if (!res.ok) {
      const retry = res.headers.get('Retry-After');
      showError(data.error + (retry ? ` (retry in ${retry} s)` : ''));
      return;
    }
    showResult(data);
  } catch (err) {
    showError(`The server could not be reached: ${err.message}`);
  } finally {
    button.disabled = false;
    $('status').textContent = '';
  }
}

$('checkpoint').addEventListener('change', showCheckpoint);
$('text').addEventListener('input', updateCount);
$('text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) synthesise();
});
$('synthesise').addEventListener('click', synthesise);
loadCheckpoints();
