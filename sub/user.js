import http from 'k6/http';
const data = open('./data.txt');
export const options = {
  scenarios: {
    browse: { executor: 'constant-vus', vus: 2, duration: '2s', exec: 'browse' },
  },
  thresholds: { http_req_duration: ['p(95)<500'], 'http_req_failed': [{threshold: 'rate<0.01', abortOnFail: true}], 'http_reqs{scenario:browse}': ['count>1'] },
};
export function browse() { http.get('http://127.0.0.1:18099/' + (__ENV.FAIL ? 'fail' : 'x')); }
