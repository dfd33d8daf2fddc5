// Shared by the shipped scripts: the stage's scenario from LP_* variables set by the
// runner, 429 counted apart from errors, p(99) in the summary, and the summary file.
import http from 'k6/http';
import { Counter } from 'k6/metrics';

export const rateLimited = new Counter('rate_limited');

// 429 is load shedding, not a failure: keep it out of http_req_failed, count it apart.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }, 429));

export function target() {
  const url = __ENV.LP_TARGET;
  if (!url) {
    throw new Error('LP_TARGET is not set: pass the base URL of the service under test');
  }
  return url.replace(/\/+$/, '');
}

export function noteStatus(res) {
  if (res.status === 429) {
    rateLimited.add(1);
  }
  return res;
}

// VUs rounded up to a multiple of the k6 processes the stage is split over (LP_GENERATORS,
// one execution segment each), so that every generator gets the same share
function split(vus) {
  const generators = Math.max(1, parseInt(__ENV.LP_GENERATORS || '1', 10));
  return Math.ceil(vus / generators) * generators;
}

function scenario(model, level, duration, startTime) {
  if (model === 'rate') {
    return {
      executor: 'constant-arrival-rate',
      rate: level,
      timeUnit: '1s',
      duration: duration,
      // enough VUs up front that a slow answer, not VU start-up, is what drops iterations
      preAllocatedVUs: split(Math.min(Math.max(20, Math.ceil(level / 4)), 1000)),
      maxVUs: split(Math.max(100, level)),
      startTime: startTime,
      gracefulStop: '5s',
    };
  }
  return {
    executor: 'constant-vus',
    vus: level,
    duration: duration,
    startTime: startTime,
    gracefulStop: '5s',
  };
}

export function stageOptions() {
  const model = __ENV.LP_MODEL || 'vus';
  const level = parseInt(__ENV.LP_LEVEL || '1', 10);
  const duration = __ENV.LP_DURATION || '10s';
  const warmup = __ENV.LP_WARMUP || '';
  // LP_GAP_MS: when the runner scrapes the server's metrics between the warm-up and the
  // measured scenario, main starts this long after the warm-up, whose iterations stop
  // half-way into the gap
  const gapMs = parseInt(__ENV.LP_GAP_MS || '0', 10);
  const scenarios = {};
  let mainStart = '0s';
  if (warmup && warmup !== '0s') {
    scenarios.warmup = scenario(model, level, warmup, '0s');
    mainStart = warmup;
    if (gapMs > 0) {
      scenarios.warmup.gracefulStop = Math.round(gapMs / 2) + 'ms';
    }
  }
  if (gapMs > 0) {
    mainStart = mainStart + gapMs + 'ms'; // k6 durations add up: "2s1000ms"
  }
  scenarios.main = scenario(model, level, duration, mainStart);
  return {
    scenarios: scenarios,
    // every request carries its stage; the scenario (warmup or main) marks the warm-up
    tags: { stage: __ENV.LP_STAGE || 'unstaged' },
    // only the tags loadproof reads: every tag costs k6 work on each of ~13 samples/request
    systemTags: ['status', 'method', 'name', 'scenario', 'expected_response', 'error_code'],
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
    discardResponseBodies: false,
    thresholds: {
      // sub-metrics so the summary carries the measured (non-warm-up) figures apart
      'http_req_duration{scenario:main}': [],
      'http_req_failed{scenario:main}': [],
      'http_reqs{scenario:main}': [],
      'dropped_iterations{scenario:main}': [],
      'rate_limited{scenario:main}': [],
    },
  };
}

// When setup ends k6 starts the scenarios: the runner reads this mark from k6's log as the
// origin of the stage's measured window (the warm-up and the main scenario start from it).
export function markStart() {
  console.log('loadproof:test-start ' + Date.now());
}

export function writeSummary(data) {
  const out = {};
  if (__ENV.LP_SUMMARY_PATH) {
    out[__ENV.LP_SUMMARY_PATH] = JSON.stringify(data);
  }
  return out;
}
