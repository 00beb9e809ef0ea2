import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { devSetup } from './dev.js';
import { agentTrusting, parseBody, request } from './http.js';

const HOLD_SCRIPT = fileURLToPath(new URL('./hold.js', import.meta.url));
const READY_PREFIX = 'switchboard-testkit ready ';
const GRAPH_SCOPE = 'https://graph.microsoft.com/.default';

/** An error answer of Switchboard's control API or token endpoint. */
export class SwitchboardError extends Error {
  /**
   * @param {string} message
   * @param {{status: number, code?: string, body?: unknown}} details
   */
  constructor(message, { status, code, body }) {
    super(message);
    this.name = 'SwitchboardError';
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/**
 * A running Switchboard server, and the helpers a test uses to steer it: Graph requests with an
 * app token, simulated parties, the virtual clock, faults, deliveries and meetings.
 */
export class Switchboard {
  /**
   * Use `Switchboard.start()`, `Switchboard.fromEnv()` or `Switchboard.connect()`.
   * @param {object} settings
   */
  constructor({ url, httpsUrl, appId, tenantId, clientSecret, caFile, adminToken, token, child }) {
    /** The server over plain HTTP, `http://127.0.0.1:PORT`. */
    this.url = url;
    /** The same port over TLS, `https://127.0.0.1:PORT`: what the SDKs need. */
    this.httpsUrl = httpsUrl;
    this.appId = appId;
    this.tenantId = tenantId;
    this.clientSecret = clientSecret;
    /** The local certificate authority's PEM file, or undefined when the server has none. */
    this.caFile = caFile;
    /** The PEM text of `caFile`. */
    this.ca = caFile ? readFileSync(caFile, 'utf8') : undefined;
    /** The control API's token, or undefined when the server serves loopback clients without one. */
    this.adminToken = adminToken;
    /** An https.Agent trusting the local authority, for this process's own requests. */
    this.httpsAgent = agentTrusting(this.ca);
    this.cachedToken = token;
    this.child = child;
  }

  /**
   * Starts a server for this process with `switchboard exec` (a free port, memory store,
   * virtual clock, https public URL) and resolves once it serves.
   * @param {{bin?: string, config?: string, showLogs?: boolean, timeoutMs?: number}} [options]
   * @returns {Promise<Switchboard>}
   */
  static async start({ bin, config, showLogs = false, timeoutMs = 30_000 } = {}) {
    const binary = bin || process.env.SWITCHBOARD_BIN || 'switchboard';
    const args = ['exec', ...(config ? ['--config', config] : []), '--', process.execPath, HOLD_SCRIPT];
    const child = spawn(binary, args, { stdio: ['pipe', 'pipe', showLogs ? 'inherit' : 'pipe'] });
    const env = await readyEnv(child, binary, timeoutMs);
    for (const stream of [child.stdin, child.stdout, child.stderr]) stream?.unref?.();
    child.unref();
    return new Switchboard({ ...settingsFromEnv(env), child });
  }

  /**
   * Attaches to the server `switchboard exec` started for this process, from its variables
   * (`SWITCHBOARD_URL` and the others), or to any server named by `SWITCHBOARD_URL`, taking the
   * development app for what is not set.
   * @param {Record<string, string | undefined>} [env]
   * @returns {Switchboard}
   */
  static fromEnv(env = process.env) {
    if (!env.SWITCHBOARD_URL) {
      throw new Error('SWITCHBOARD_URL is not set: run the tests under `switchboard exec -- COMMAND`, '
        + 'or use Switchboard.start() or Switchboard.connect().');
    }
    return new Switchboard(settingsFromEnv(env));
  }

  /**
   * `fromEnv()` when `SWITCHBOARD_URL` is set (under `switchboard exec`), otherwise `start(options)`.
   * @param {{bin?: string, config?: string, showLogs?: boolean, timeoutMs?: number}} [options]
   * @returns {Promise<Switchboard>}
   */
  static async connect(options = {}) {
    return process.env.SWITCHBOARD_URL ? Switchboard.fromEnv() : Switchboard.start(options);
  }

  /** Stops the server if `start()` started it; a server this process attached to is left running. */
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    this.child = undefined;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGTERM'), 10_000);
    await exited;
    clearTimeout(timer);
    this.httpsAgent?.destroy();
  }

  /**
   * A Graph app token for `appId` from the server's token endpoint (client credentials), kept
   * until a minute before it expires.
   * @returns {Promise<string>}
   */
  async token() {
    if (this.cachedToken && secondsLeft(this.cachedToken) > 60) return this.cachedToken;
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: this.appId,
      client_secret: this.clientSecret,
      scope: GRAPH_SCOPE,
    });
    const answer = await request(`${this.url}/${this.tenantId}/oauth2/v2.0/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    });
    const body = parseBody(answer);
    if (answer.status !== 200) {
      throw new SwitchboardError(
        `the token endpoint refused app ${this.appId}: ${answer.status} ${body?.error_description ?? answer.text}`,
        { status: answer.status, code: body?.error, body });
    }
    this.cachedToken = body.access_token;
    return this.cachedToken;
  }

  /**
   * A Graph request with the app's token. `path` is under `/v1.0` unless it starts with
   * `/v1.0/` or `/beta/`. Any status is returned, not thrown.
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body] sent as JSON
   * @returns {Promise<{status: number, headers: Record<string, string | string[]>, body: any}>}
   */
  async graph(method, path, body) {
    const versioned = /^\/(v1\.0|beta)\//i.test(path) ? path : `/v1.0${path.startsWith('/') ? '' : '/'}${path}`;
    const headers = { authorization: `Bearer ${await this.token()}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const answer = await request(this.url + versioned, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: answer.status, headers: answer.headers, body: parseBody(answer) };
  }

  /**
   * Empties the server (calls, notifications, party history, recordings; meetings as
   * configured). The clock stays where it is.
   */
  async reset() {
    await this.control('POST', '/reset');
  }

  /**
   * Moves the virtual clock forward and runs what fell due. With `settle` (the default) it
   * resolves once every notification due by then has had its delivery attempt.
   * @param {number} seconds
   * @param {{settle?: boolean}} [options]
   * @returns {Promise<Date>} the call clock's new time
   */
  async advance(seconds, { settle = true } = {}) {
    const { now } = await this.control('POST', '/clock/advance', { seconds, settle });
    return new Date(now);
  }

  /**
   * The call clock's time.
   * @returns {Promise<Date>}
   */
  async clockNow() {
    const { now } = await this.control('GET', '/clock');
    return new Date(now);
  }

  /**
   * The party hangs up every call leg it is in.
   * @param {string} party a party id
   * @returns {Promise<string[]>} the bots' calls that ended
   */
  async hangUp(party) {
    const { callsEnded } = await this.control('POST', `/parties/${encodeURIComponent(party)}/hangup`);
    return callsEnded;
  }

  /**
   * The party presses keys (`0`-`9`, `*`, `#`, `A`-`D`) in every established call it is in.
   * @param {string} party
   * @param {string} keys
   * @returns {Promise<string[]>} the bots' calls that heard them
   */
  async press(party, keys) {
    const { callIds } = await this.control('POST', `/parties/${encodeURIComponent(party)}/tones`, { tones: keys });
    return callIds;
  }

  /**
   * The party calls an app (by default this one); the app's bot gets an incoming call at
   * `callbackUri` (by default the app's configured `incoming_call_uri`).
   * @param {string} party
   * @param {{appId?: string, callbackUri?: string}} [options]
   * @returns {Promise<string>} the bot's new call id, in state `incoming`
   */
  async dial(party, { appId = this.appId, callbackUri } = {}) {
    const body = { appId, ...(callbackUri ? { incomingCallUri: callbackUri } : {}) };
    const { callId } = await this.control('POST', `/parties/${encodeURIComponent(party)}/dial`, body);
    return callId;
  }

  /**
   * Ends a live call now with the given end reason; the bot gets `deleted`/`terminated` with it.
   * @param {string} callId
   * @param {{code: number, subcode: number}} reason
   * @returns {Promise<{code: number, subcode: number, message: string}>} the `resultInfo` sent
   */
  async failCall(callId, { code, subcode }) {
    const { resultInfo } = await this.control('POST', `/calls/${encodeURIComponent(callId)}/fail`, { code, subcode });
    return resultInfo;
  }

  /**
   * Every live call, oldest first, optionally only those in `state` or of `appId`.
   * @param {{state?: string, appId?: string}} [filter]
   * @returns {Promise<object[]>}
   */
  async calls({ state, appId } = {}) {
    const query = new URLSearchParams({ ...(state ? { state } : {}), ...(appId ? { appId } : {}) }).toString();
    const { value } = await this.control('GET', `/calls${query ? `?${query}` : ''}`);
    return value;
  }

  /**
   * Every notification of a call, in order, each with its `sequence`, `status` (`pending`,
   * `delivered`, `dead`), `body` and `attempts`.
   * @param {string} callId
   * @returns {Promise<object[]>}
   */
  async deliveries(callId) {
    const { notifications } = await this.control('GET', `/calls/${encodeURIComponent(callId)}/deliveries`);
    return notifications;
  }

  /**
   * POSTs one notification of a call again, now.
   * @param {string} callId
   * @param {number} sequence
   * @returns {Promise<{callId: string, sequence: number, status: string, attempt: object}>}
   */
  async redeliver(callId, sequence) {
    return this.control('POST', `/calls/${encodeURIComponent(callId)}/deliveries/${sequence}/redeliver`);
  }

  /**
   * Who is in a configured meeting now.
   * @param {string} joinMeetingId
   * @returns {Promise<object>}
   */
  async meeting(joinMeetingId) {
    return this.control('GET', `/meetings/${encodeURIComponent(joinMeetingId)}`);
  }

  /**
   * Replaces the fault rules with these (none given: no rules) and starts their random choices
   * again from `seed` (the server picks one when it is not given). The rules have the server's
   * keys, as `[faults]` writes them: `{ route: 'calls', fault: 'throttle', retry_after_secs: 2 }`.
   * @param {{seed?: number, api?: object[], notifications?: object[]}} [rules]
   * @returns {Promise<{seed: number, api: object[], notifications: object[]}>} the rules in
   *   force, every key filled in, with the seed
   */
  async setFaults({ seed, api, notifications } = {}) {
    if (seed !== undefined && !Number.isSafeInteger(seed)) {
      throw new RangeError(`the seed ${seed} is not an integer a JavaScript number holds exactly `
        + '(0 to Number.MAX_SAFE_INTEGER): the server would draw from another one');
    }
    return this.control('PUT', '/faults', {
      ...(seed !== undefined ? { seed } : {}),
      ...(api ? { api } : {}),
      ...(notifications ? { notifications } : {}),
    });
  }

  /**
   * The fault rules in force, with the seed their random choices are drawn from.
   * @returns {Promise<{seed: number, api: object[], notifications: object[]}>}
   */
  async faults() {
    return this.control('GET', '/faults');
  }

  /** Removes every fault rule, until `reset()` brings back those of `[faults]`. */
  async clearFaults() {
    await this.control('PUT', '/faults', {});
  }

  /**
   * A party, the calls it is or was in (`calls`), and the commands it received (`heard`).
   * @param {string} partyId
   * @returns {Promise<object>}
   */
  async party(partyId) {
    return this.control('GET', `/parties/${encodeURIComponent(partyId)}`);
  }

  /**
   * A request to the control API (`/_switchboard/v1` + `path`); a status other than 2xx throws
   * a SwitchboardError.
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   */
  async control(method, path, body) {
    const headers = {};
    if (this.adminToken) headers.authorization = `Bearer ${this.adminToken}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const answer = await request(`${this.url}/_switchboard/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const parsed = parseBody(answer);
    if (answer.status >= 200 && answer.status < 300) return parsed;
    const error = parsed?.error;
    throw new SwitchboardError(
      `${method} /_switchboard/v1${path} answered ${answer.status}${error?.code ? ` ${error.code}` : ''}: `
        + `${error?.message ?? answer.text}`,
      { status: answer.status, code: error?.code, body: parsed });
  }
}

/** @param {Record<string, string | undefined>} env */
function settingsFromEnv(env) {
  const url = env.SWITCHBOARD_URL.replace(/\/+$/, '');
  return {
    url,
    httpsUrl: env.SWITCHBOARD_HTTPS_URL || url.replace(/^http:/, 'https:'),
    appId: env.SWITCHBOARD_APP_ID || devSetup.appId,
    tenantId: env.SWITCHBOARD_TENANT_ID || devSetup.tenantId,
    clientSecret: env.SWITCHBOARD_CLIENT_SECRET || devSetup.clientSecret,
    caFile: env.SWITCHBOARD_CA_FILE || undefined,
    adminToken: env.SWITCHBOARD_ADMIN_TOKEN || undefined,
    token: env.SWITCHBOARD_TOKEN || undefined,
  };
}

/**
 * Waits for the hold script's line on the child's standard output.
 * @param {import('node:child_process').ChildProcess} child
 * @param {string} binary
 * @param {number} timeoutMs
 * @returns {Promise<Record<string, string>>}
 */
function readyEnv(child, binary, timeoutMs) {
  let stdout = '';
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (text) => { stderr = (stderr + text).slice(-4000); });
  return new Promise((resolve, reject) => {
    const fail = (message) => {
      clearTimeout(timer);
      child.kill('SIGTERM');
      reject(new Error(stderr ? `${message}\nIts standard error ended with:\n${stderr}` : message));
    };
    const timer = setTimeout(() => fail(`${binary} exec did not start a server within ${timeoutMs} ms.`), timeoutMs);
    child.once('error', (error) => fail(error.code === 'ENOENT'
      ? `The Switchboard binary "${binary}" was not found. Set SWITCHBOARD_BIN to its path `
        + '(target/release/switchboard after `cargo build --release`), pass {bin}, or put `switchboard` on PATH.'
      : `could not run ${binary}: ${error.message}`));
    // 'close' comes after the standard streams are read to their end, so the message has it all.
    child.once('close', (code, signal) => fail(`${binary} exec ended (${signal ?? `exit ${code}`}) before its server was ready.`));
    child.stdout.setEncoding('utf8').on('data', (text) => {
      stdout += text;
      const line = stdout.split('\n').find((candidate) => candidate.startsWith(READY_PREFIX));
      if (!line) return;
      clearTimeout(timer);
      child.removeAllListeners('close');
      child.removeAllListeners('error');
      resolve(JSON.parse(line.slice(READY_PREFIX.length)));
    });
  });
}

/** Seconds until a JWT's `exp`, or 0 when it cannot be read. */
function secondsLeft(jwt) {
  try {
    const claims = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
    return claims.exp - Date.now() / 1000;
  } catch {
    return 0;
  }
}
