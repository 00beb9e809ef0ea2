import { createPublicKey, verify } from 'node:crypto';

import { request } from './http.js';

/** How far a token's `exp` and `nbf` may be off, as token libraries allow for clock skew. */
const LEEWAY_SECONDS = 300;

/**
 * Checks the bearer token of a notification POST as a real bot must: RS256, signed by a key
 * of the metadata's `jwks_uri`, the expected issuer, the app id as audience, not expired.
 */
export class NotificationTokenValidator {
  /**
   * @param {{metadataUrl: string, audience: string, issuer?: string, agent?: import('node:https').Agent}} options
   *   `metadataUrl` is the notification-signing metadata (`{server}/v1/.well-known/OpenIdConfiguration`);
   *   `issuer` defaults to the one it names; `agent` is for a `jwks_uri` over HTTPS.
   */
  constructor({ metadataUrl, audience, issuer, agent }) {
    this.metadataUrl = metadataUrl;
    this.audience = audience;
    this.issuer = issuer;
    this.agent = agent;
    /** @type {Promise<{issuer: string, jwks_uri: string}> | undefined} */
    this.metadata = undefined;
    /** @type {Map<string, import('node:crypto').KeyObject>} keys by `kid` and by `x5t` */
    this.keys = new Map();
  }

  /**
   * Resolves to the token's claims, or rejects with why it is not valid.
   * @param {string | undefined} authorization the `Authorization` header
   * @returns {Promise<Record<string, unknown>>}
   */
  async validate(authorization) {
    const match = /^Bearer (\S+)$/i.exec(authorization ?? '');
    if (!match) throw new Error('no "Authorization: Bearer <token>" header');
    const parts = match[1].split('.');
    if (parts.length !== 3) throw new Error('the bearer token is not a JWT (three dot-separated parts)');
    const header = decodeJson(parts[0], 'header');
    const claims = decodeJson(parts[1], 'payload');
    if (header.alg !== 'RS256') throw new Error(`alg is ${JSON.stringify(header.alg)}, not "RS256"`);
    const key = await this.key(header);
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
    if (!verify('RSA-SHA256', signed, key, Buffer.from(parts[2], 'base64url'))) {
      throw new Error(`the signature does not match key ${header.kid ?? header.x5t}`);
    }
    const issuer = this.issuer ?? (await this.loadMetadata()).issuer;
    if (claims.iss !== issuer) throw new Error(`iss is ${JSON.stringify(claims.iss)}, not "${issuer}"`);
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!audiences.includes(this.audience)) {
      throw new Error(`aud is ${JSON.stringify(claims.aud)}, not the app id "${this.audience}"`);
    }
    const now = Date.now() / 1000;
    if (typeof claims.exp !== 'number') throw new Error('the token has no exp');
    if (claims.exp + LEEWAY_SECONDS < now) throw new Error(`the token expired at ${new Date(claims.exp * 1000).toISOString()}`);
    if (typeof claims.nbf === 'number' && claims.nbf - LEEWAY_SECONDS > now) {
      throw new Error(`the token is not valid before ${new Date(claims.nbf * 1000).toISOString()}`);
    }
    return claims;
  }

  /** The signing key a token header names; the key set is read again once for an unknown one. */
  async key(header) {
    const id = header.kid ?? header.x5t;
    if (!id) throw new Error('the token header names no key (kid or x5t)');
    if (!this.keys.has(id)) await this.loadKeys();
    const key = this.keys.get(id);
    if (!key) throw new Error(`no key ${id} in the server's key set`);
    return key;
  }

  async loadMetadata() {
    this.metadata ??= fetchJson(this.metadataUrl, this.agent).catch((error) => {
      this.metadata = undefined;
      throw error;
    });
    return this.metadata;
  }

  async loadKeys() {
    const { jwks_uri: jwksUri } = await this.loadMetadata();
    const { keys = [] } = await fetchJson(jwksUri, this.agent);
    this.keys.clear();
    for (const jwk of keys) {
      if (jwk.kty !== 'RSA') continue;
      const key = createPublicKey({ key: jwk, format: 'jwk' });
      for (const id of [jwk.kid, jwk.x5t]) if (id) this.keys.set(id, key);
    }
  }
}

async function fetchJson(url, agent) {
  const answer = await request(url, { agent });
  if (answer.status !== 200) throw new Error(`GET ${url} answered ${answer.status}`);
  return JSON.parse(answer.text);
}

function decodeJson(part, what) {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new Error(`the token's ${what} is not base64url JSON`);
  }
}
