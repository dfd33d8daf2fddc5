import * as user from '/tmp/hm/sub/user.js';
export * from '/tmp/hm/sub/user.js';
const base = user.options || {};
export const options = Object.assign({}, base, { scenarios: { main: { executor: 'constant-arrival-rate', rate: 10, timeUnit: '1s', duration: '2s', preAllocatedVUs: 5, exec: 'browse' } }, tags: {stage: 's1'} });
