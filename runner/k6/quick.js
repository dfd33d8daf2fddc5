// quick: a short check of one endpoint of any target. Measures the latency and status
// of GET LP_TARGET + LP_PATH (default /) under the stage's load, with no think time.
import http from 'k6/http';
import { markStart, noteStatus, stageOptions, target, writeSummary } from './lib/loadproof.js';

export const options = stageOptions();

const url = target() + (__ENV.LP_PATH || '/');

export default function () {
  noteStatus(http.get(url, { tags: { name: 'quick' } }));
}

export function setup() {
  markStart();
}

export function handleSummary(data) {
  return writeSummary(data);
}
