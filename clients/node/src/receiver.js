import http from 'node:http';

import { request } from './http.js';
import { NotificationTokenValidator } from './jwt.js';

const SEQUENCE_HEADER = 'switchboard-notification-sequence';
const FINAL_OPERATION_STATUSES = new Set(['completed', 'failed']);
/** Graph's tone names and the keys they are. */
const KEYS = {
  star: '*', pound: '#', a: 'A', b: 'B', c: 'C', d: 'D',
  ...Object.fromEntries([...'0123456789'].map((digit) => [`tone${digit}`, digit])),
};

/** Headers not passed on when a POST is forwarded. */
const HOP_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive']);

/**
 * A bot's callback endpoint for tests: an HTTP server on 127.0.0.1 that checks each
 * notification's token as a real bot must, records the notifications, hands them to the bot
 * under test (a handler, or the bot's own endpoint), and answers `202`. It also serves WAV prompts.
 */
export class Receiver {
  /**
   * Starts a receiver on a free port of 127.0.0.1.
   * @param {{switchboard: import('./switchboard.js').Switchboard,
   *          onNotification?: (notification: object) => unknown, forwardTo?: string,
   *          appId?: string, issuer?: string, path?: string}} options
   *   `onNotification` is called with each valid notification, in order, and awaited before the
   *   POST is answered; if it throws, the POST is answered `500` and the error is kept in
   *   `errors`. `forwardTo` is a bot's own callback URL: each valid POST is passed on to it as
   *   it came, and answered with the bot's answer (a status other than 2xx is kept in `errors`).
   *   `appId` is the audience tokens must have (default `switchboard.appId`), `issuer` their
   *   issuer (default: the one the signing metadata names).
   * @returns {Promise<Receiver>}
   */
  static async start({ switchboard, onNotification, forwardTo, appId, issuer, path = '/api/calls' }) {
    if (!switchboard) throw new Error('Receiver.start needs {switchboard}: the Switchboard whose notifications it checks.');
    const receiver = new Receiver({
      switchboard, onNotification, forwardTo, appId: appId ?? switchboard.appId, issuer, path,
    });
    await new Promise((resolve, reject) => {
      receiver.server.once('error', reject);
      receiver.server.listen(0, '127.0.0.1', resolve);
    });
    receiver.server.unref();
    return receiver;
  }

  /** Use `Receiver.start()`. */
  constructor({ switchboard, onNotification, forwardTo, appId, issuer, path }) {
    this.validator = new NotificationTokenValidator({
      metadataUrl: `${switchboard.url}/v1/.well-known/OpenIdConfiguration`,
      audience: appId,
      issuer,
      agent: switchboard.httpsAgent,
    });
    this.onNotification = onNotification;
    this.forwardTo = forwardTo;
    this.path = path;
    /** @type {object[]} every valid notification received, in order */
    this.received = [];
    /** @type {{reason: string, authorization: string | undefined, body: string}[]} POSTs refused for their token */
    this.invalid = [];
    /** @type {Error[]} what `onNotification` threw, and the bot's failed answers to forwarded POSTs */
    this.errors = [];
    this.failures = { count: 0, status: 503 };
    this.prompts = new Map();
    this.waiters = new Set();
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((error) => {
        this.errors.push(error);
        res.writeHead(500).end();
      });
    });
  }

  /** The callback URL to give Switchboard (`callbackUri`), `http://127.0.0.1:PORT/api/calls`. */
  get url() {
    return `${this.origin}${this.path}`;
  }

  /** `http://127.0.0.1:PORT`. */
  get origin() {
    return `http://127.0.0.1:${this.server.address().port}`;
  }

  /**
   * Answers the next `count` notification POSTs with `status` (default 503) instead of taking
   * them, as a failing bot would; Switchboard then retries them on the call clock.
   * @param {number} [count]
   * @param {{status?: number}} [options]
   */
  failNext(count = 1, { status = 503 } = {}) {
    this.failures = { count, status };
  }

  /**
   * The valid notifications received, in order of arrival; only those of `callId` if given. A
   * notification sent again is there again, with the same `sequence`.
   * @param {string} [callId]
   */
  notifications(callId) {
    const isOfCall = ofCall(callId);
    return this.received.filter(isOfCall);
  }

  /**
   * The states the call went through, in order, from its call notifications (a state is listed
   * again only after another one).
   * @param {string} callId
   * @returns {string[]}
   */
  states(callId) {
    const states = [];
    for (const { state } of this.notifications(callId)) {
      if (state && state !== states.at(-1)) states.push(state);
    }
    return states;
  }

  /**
   * The keys the caller pressed, from the call's tone notifications: for example `12#`.
   * @param {string} callId
   * @returns {string}
   */
  tones(callId) {
    return this.notifications(callId).filter(({ tone }) => tone).map(({ tone }) => KEYS[tone] ?? '?').join('');
  }

  /**
   * Resolves with the first notification of the call (of any call if `callId` is null),
   * received already or later, that matches every condition given, or rejects after `timeout`
   * ms saying what did come.
   * - `state`: a call notification with this call state;
   * - `operation`: a finished (`completed` or `failed`) operation with this id or `clientContext`;
   * - `changeType`: `created`, `updated` or `deleted`;
   * - `tone`: a tone notification with this tone (`tone1`, `pound`, ...);
   * - `match`: a predicate on the notification;
   * - `since`: only notifications with a greater `sequence`.
   * @param {string | null} callId
   * @param {{state?: string, operation?: string, changeType?: string, tone?: string,
   *          match?: (notification: object) => boolean, since?: number, timeout?: number}} [conditions]
   * @returns {Promise<object>}
   */
  waitFor(callId, conditions = {}) {
    const { timeout = 5000 } = conditions;
    const isOfCall = ofCall(callId);
    const matches = (notification) => isOfCall(notification) && satisfies(notification, conditions);
    const found = this.received.find(matches);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { matches, resolve };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(this.timeoutMessage(callId, conditions, timeout)));
      }, timeout);
      waiter.resolve = (notification) => {
        clearTimeout(timer);
        resolve(notification);
      };
      this.waiters.add(waiter);
    });
  }

  /**
   * Serves a prompt of `seconds` of silence (a WAV file: 8 kHz, 16-bit, mono) and returns its
   * URL, for `playPrompt`'s `mediaInfo.uri`. Switchboard plays a prompt for as long as its
   * header says.
   * @param {string} name
   * @param {number} seconds
   * @returns {string}
   */
  prompt(name, seconds) {
    const known = this.prompts.get(name);
    if (known && known.seconds !== seconds) {
      throw new Error(`prompt "${name}" is already served with ${known.seconds} s; Switchboard remembers `
        + 'durations by URL, so give another length another name.');
    }
    this.prompts.set(name, { seconds, wav: silentWav(seconds) });
    return `${this.origin}/prompts/${encodeURIComponent(name)}.wav`;
  }

  /** Forgets what was received, refused and thrown, and any `failNext`. Prompts stay. */
  clear() {
    this.received = [];
    this.invalid = [];
    this.errors = [];
    this.failures = { count: 0, status: 503 };
  }

  /** Throws if a notification had an invalid token, `onNotification` threw, or the bot refused a forwarded POST. */
  assertClean() {
    const problems = [
      ...this.invalid.map(({ reason }) => `a notification with an invalid token: ${reason}`),
      ...this.errors.map((error) => `the bot failed: ${error.stack ?? error}`),
    ];
    if (problems.length) throw new Error(problems.join('\n'));
  }

  /** Stops the server. */
  async close() {
    await new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  async handle(req, res) {
    const body = await readBody(req);
    if (req.method === 'GET' && req.url.startsWith('/prompts/')) return this.servePrompt(req, res);
    if (req.method !== 'POST') return res.writeHead(405, { allow: 'POST' }).end();
    try {
      await this.validator.validate(req.headers.authorization);
    } catch (error) {
      this.invalid.push({ reason: error.message, authorization: req.headers.authorization, body });
      return res.writeHead(401).end();
    }
    if (this.failures.count > 0) {
      this.failures.count -= 1;
      return res.writeHead(this.failures.status).end();
    }
    const notifications = parseNotifications(req, body);
    for (const notification of notifications) this.record(notification);
    try {
      for (const notification of notifications) await this.onNotification?.(notification);
    } catch (error) {
      this.errors.push(error);
      return res.writeHead(500).end();
    }
    if (this.forwardTo) return this.forward(req, body, res);
    res.writeHead(202).end();
  }

  /** Passes a POST on to the bot's own endpoint and answers with what the bot answered. */
  async forward(req, body, res) {
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([name]) => !HOP_HEADERS.has(name)));
    let answer;
    try {
      answer = await request(this.forwardTo, { method: 'POST', headers, body });
    } catch (error) {
      this.errors.push(new Error(`the bot at ${this.forwardTo} did not answer: ${error.message}`));
      return res.writeHead(502).end();
    }
    if (answer.status < 200 || answer.status >= 300) {
      const sequence = req.headers[SEQUENCE_HEADER];
      this.errors.push(new Error(`the bot at ${this.forwardTo} answered ${answer.status} to notification ${sequence}: ${answer.text}`));
    }
    const location = answer.headers.location;
    res.writeHead(answer.status, location ? { location } : {}).end(answer.text);
  }

  record(notification) {
    this.received.push(notification);
    for (const waiter of this.waiters) {
      if (!waiter.matches(notification)) continue;
      this.waiters.delete(waiter);
      waiter.resolve(notification);
    }
  }

  servePrompt(req, res) {
    const name = decodeURIComponent(req.url.slice('/prompts/'.length).replace(/\.wav$/, ''));
    const prompt = this.prompts.get(name);
    if (!prompt) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': prompt.wav.length }).end(prompt.wav);
  }

  timeoutMessage(callId, conditions, timeout) {
    const { timeout: _, match, ...named } = conditions;
    const wanted = JSON.stringify({ ...named, ...(match ? { match: 'a predicate' } : {}) });
    const seen = this.notifications(callId);
    const lines = [`waitFor(${JSON.stringify(callId ?? null)}, ${wanted}) timed out after ${timeout} ms.`];
    if (seen.length) {
      lines.push(`Notifications ${callId ? 'of this call ' : ''}received: ${seen.map(describe).join('; ')}.`);
    } else if (!callId) {
      lines.push(`No notification was received; was the callbackUri ${this.url}?`);
    } else {
      const others = [...new Set(this.received.map((notification) => notification.callId))];
      lines.push(`No notification of this call was received${others.length ? ` (calls seen: ${others.join(', ')})` : ''}; `
        + `was its callbackUri ${this.url}?`);
    }
    if (this.invalid.length) lines.push(`${this.invalid.length} POST(s) were refused for their token: ${this.invalid[0].reason}.`);
    if (this.errors.length) lines.push(`The bot failed: ${this.errors[0].message}.`);
    lines.push('With the virtual clock nothing happens until the test moves it: await switchboard.advance(seconds).');
    return lines.join('\n');
  }
}

/** A filter for the notifications of a call (any call for null or undefined). */
function ofCall(callId) {
  if (callId === undefined || callId === null) return () => true;
  if (typeof callId !== 'string') throw new TypeError(`expected a call id (a string), got ${JSON.stringify(callId)}`);
  const id = callId.toLowerCase();
  return (notification) => notification.callId === id;
}

function satisfies(notification, { state, operation, changeType, tone, match, since }) {
  if (changeType && !sameText(notification.changeType, changeType)) return false;
  if (since !== undefined && since !== null && !(notification.sequence > since)) return false;
  if (state && !sameText(notification.state, state)) return false;
  if (operation && !(FINAL_OPERATION_STATUSES.has(notification.status)
    && (sameText(notification.operationId, operation) || sameText(notification.clientContext, operation)))) return false;
  if (tone && notification.tone !== tone) return false;
  return !match || Boolean(match(notification));
}

function sameText(a, b) {
  return typeof a === 'string' && a.toLowerCase() === b.toLowerCase();
}

/**
 * Turns a POSTed `commsNotifications` body into one record per notification.
 * @param {import('node:http').IncomingMessage} req
 * @param {string} body
 */
function parseNotifications(req, body) {
  const { value = [] } = JSON.parse(body);
  const sequences = String(req.headers[SEQUENCE_HEADER] ?? '').split(',').map((text) => Number.parseInt(text, 10));
  return value.map((raw, index) => {
    const [, callId = '', segment = '', subId] = /\/calls\/([^/]+)(?:\/([^/]+)(?:\/([^/]+))?)?/i
      .exec(raw.resourceUrl ?? '') ?? [];
    const kind = { '': 'call', operations: 'operation' }[segment.toLowerCase()] ?? segment.toLowerCase();
    const data = raw.resourceData !== null && typeof raw.resourceData === 'object' ? raw.resourceData : {};
    return {
      callId: callId.toLowerCase(),
      sequence: Number.isNaN(sequences[index]) ? undefined : sequences[index],
      changeType: raw.changeType,
      resourceUrl: raw.resourceUrl,
      resourceData: raw.resourceData,
      kind,
      operationId: kind === 'operation' ? subId?.toLowerCase() : undefined,
      state: kind === 'call' ? data.state : undefined,
      status: kind === 'operation' ? data.status : undefined,
      resultInfo: data.resultInfo ?? undefined,
      tone: data.toneInfo?.tone ?? undefined,
      clientContext: data.clientContext ?? undefined,
      path: req.url,
      headers: req.headers,
      raw,
    };
  });
}

function describe({ sequence, changeType, kind, state, status, tone, resultInfo, clientContext, operationId }) {
  const what = kind === 'call'
    ? [state, tone, resultInfo && `${resultInfo.code}/${resultInfo.subcode}`]
    : kind === 'operation'
      ? [`operation ${clientContext ?? operationId}`, status]
      : [kind];
  return `#${sequence} ${changeType} ${what.filter(Boolean).join(' ')}`;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** A WAV file of `seconds` of silence, 8 kHz, 16-bit, mono. */
function silentWav(seconds) {
  const rate = 8000;
  const dataBytes = Math.round(seconds * rate) * 2;
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'ascii');
  header.writeUInt32LE(36 + dataBytes, 4);
  header.write('WAVEfmt ', 8, 'ascii');
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36, 'ascii');
  header.writeUInt32LE(dataBytes, 40);
  return Buffer.concat([header, Buffer.alloc(dataBytes)]);
}
