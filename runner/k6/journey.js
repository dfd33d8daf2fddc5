// journey: the reference service's user journey. Each iteration submits a task
// (POST /task), reads it back (GET /task/{id}) and thinks for LP_THINK_S seconds
// (default 0.1; 0 in the open model, where arrivals set the pace).
import http from 'k6/http';
import { sleep } from 'k6';
import { markStart, noteStatus, stageOptions, target, writeSummary } from './lib/loadproof.js';

export const options = stageOptions();

const base = target();
const think = parseFloat(__ENV.LP_THINK_S || (__ENV.LP_MODEL === 'rate' ? '0' : '0.1'));
const params = { headers: { 'Content-Type': 'application/json' }, tags: { name: 'POST /task' } };

export default function () {
  const persona = 'persona-' + (1 + Math.floor(Math.random() * 50));
  const body = JSON.stringify({ persona_id: persona, task_type: 'summarize', payload: { text: 'load test' } });
  const res = noteStatus(http.post(base + '/task', body, params));
  if (res.status === 201) {
    const id = res.json('task_id');
    noteStatus(http.get(base + '/task/' + id, { tags: { name: 'GET /task/{id}' } }));
  }
  if (think > 0) {
    sleep(think);
  }
}

export function setup() {
  markStart();
}

export function handleSummary(data) {
  return writeSummary(data);
}
