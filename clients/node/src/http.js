// Small HTTP client on node:http and node:https, so the kit can trust Switchboard's local
// authority in this process whatever NODE_EXTRA_CA_CERTS said when Node started.
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';

/**
 * An https.Agent that trusts Node's usual authorities plus the PEM certificate `caPem`.
 * @param {string | undefined} caPem
 * @returns {https.Agent | undefined}
 */
export function agentTrusting(caPem) {
  if (!caPem) return undefined;
  return new https.Agent({ keepAlive: true, ca: [...tls.rootCertificates, caPem] });
}

/**
 * Sends one request and reads the whole answer.
 * @param {string | URL} url
 * @param {{method?: string, headers?: Record<string, string>, body?: string | Buffer,
 *          agent?: https.Agent, timeoutMs?: number}} [options]
 * @returns {Promise<{status: number, headers: Record<string, string | string[]>, text: string}>}
 */
export function request(url, { method = 'GET', headers = {}, body, agent, timeoutMs = 70_000 } = {}) {
  const target = new URL(url);
  const client = target.protocol === 'https:' ? https : http;
  const sent = { ...headers };
  if (body !== undefined) sent['content-length'] = String(Buffer.byteLength(body));
  return new Promise((resolve, reject) => {
    const req = client.request(target, {
      method,
      headers: sent,
      ...(target.protocol === 'https:' && agent ? { agent } : {}),
    }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({
        status: res.statusCode,
        headers: res.headers,
        text: Buffer.concat(chunks).toString('utf8'),
      }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${target} got no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Parses a JSON answer body; an empty body is `null`, a body that is not JSON stays text.
 * @param {{headers: Record<string, string | string[]>, text: string}} answer
 */
export function parseBody({ headers, text }) {
  if (text === '') return null;
  const type = String(headers['content-type'] ?? '');
  if (!type.includes('json')) return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
