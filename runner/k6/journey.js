// journey: the reference service's user journey. Each iteration submits a task
// (POST /task), reads it back (GET /task/{id}) and thinks for LP_THINK_S seconds
// (default 0.1; 0 in the open model, where arrivals set the pace).
//
// Acknowledged writes: a task answered 201 that then reads back 404 is a lost write
// (writes_lost). In a stage with a fault (LP_FAULT set by the runner), one whose read-back got
// no answer (the database down, say) is re-read at the start of a later iteration of the same
// VU, one per iteration, until it answers: writes_unverified_added - writes_verified_late is
// what was never verified. Stages without a fault send no extra request.
import http from 'k6/http';
import { sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { markStart, noteStatus, stageOptions, target, writeSummary } from './lib/loadproof.js';

export const options = stageOptions();

const base = target();
const think = parseFloat(__ENV.LP_THINK_S || (__ENV.LP_MODEL === 'rate' ? '0' : '0.1'));
const params = { headers: { 'Content-Type': 'application/json' }, tags: { name: 'POST /task' } };
const readParams = { tags: { name: 'GET /task/{id}' } };

const writesAcknowledged = new Counter('writes_acknowledged');
const writesLost = new Counter('writes_lost');
const writesUnverified = new Counter('writes_unverified_added');
const writesVerifiedLate = new Counter('writes_verified_late');
const unverified = []; // this VU's acknowledged tasks whose read-back got no answer yet
const recheck = !!__ENV.LP_FAULT;

function readBack(id, late) {
  const res = noteStatus(http.get(base + '/task/' + id, readParams));
  if (res.status === 404) {
    writesLost.add(1);
  } else if (res.status !== 200) {
    return false;
  }
  if (late) {
    writesVerifiedLate.add(1);
  }
  return true;
}

export default function () {
  if (unverified.length > 0 && readBack(unverified[0], true)) {
    unverified.shift();
  }
  const persona = 'persona-' + (1 + Math.floor(Math.random() * 50));
  const body = JSON.stringify({ persona_id: persona, task_type: 'summarize', payload: { text: 'load test' } });
  const res = noteStatus(http.post(base + '/task', body, params));
  if (res.status === 201) {
    writesAcknowledged.add(1);
    const id = res.json('task_id');
    if (!readBack(id, false) && recheck) {
      unverified.push(id);
      writesUnverified.add(1);
    }
  }
  if (think > 0) {
    sleep(think);
  }
}

export function setup() {
  // a counter appears in the summary only once something was added to it: zero is a count
  for (const counter of [writesAcknowledged, writesLost, writesUnverified, writesVerifiedLate]) {
    counter.add(0);
  }
  markStart();
}

export function handleSummary(data) {
  return writeSummary(data);
}
