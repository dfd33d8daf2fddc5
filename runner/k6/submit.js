// submit: task submission alone (POST /task), the write path of the reference service.
// Used for capacity probes in the open model: one request per iteration, no think time.
import http from 'k6/http';
import { markStart, noteStatus, stageOptions, target, writeSummary } from './lib/loadproof.js';

export const options = stageOptions();

const base = target();
const params = { headers: { 'Content-Type': 'application/json' }, tags: { name: 'POST /task' } };

export default function () {
  const persona = 'persona-' + (1 + Math.floor(Math.random() * 50));
  const body = JSON.stringify({ persona_id: persona, task_type: 'summarize', payload: { text: 'load test' } });
  noteStatus(http.post(base + '/task', body, params));
}

export function setup() {
  markStart();
}

export function handleSummary(data) {
  return writeSummary(data);
}
