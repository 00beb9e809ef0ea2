// The Receiver: token checks, recording, waiting, refusing on demand, the handler and prompts.
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import http from 'node:http';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';

import { devSetup, NotificationTokenValidator, Receiver, useSwitchboard } from 'switchboard-testkit';

const { alice } = devSetup.parties;
const kit = useSwitchboard({ before, beforeEach, after });
afterEach(() => {
  kit.receiver.onNotification = undefined;
});

async function callParty(party) {
  const { body } = await kit.switchboard.graph('POST', '/communications/calls', {
    callbackUri: kit.receiver.url,
    targets: [{ identity: { user: { id: party } } }],
    requestedModalities: ['audio'],
    mediaConfig: { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' },
  });
  return body.id;
}

/** A JWT signed RS256 with `privateKey`. */
function jwt(header, claims, privateKey) {
  const encode = (part) => Buffer.from(JSON.stringify(part)).toString('base64url');
  const input = `${encode({ typ: 'JWT', alg: 'RS256', ...header })}.${encode(claims)}`;
  return `${input}.${sign('RSA-SHA256', Buffer.from(input), privateKey).toString('base64url')}`;
}

function notificationClaims(overrides = {}) {
  const now = Math.floor(Date.now() / 1000);
  return { iss: 'https://api.botframework.com', aud: kit.switchboard.appId, nbf: now - 5, exp: now + 3600, ...overrides };
}

/** POSTs a notification body to the receiver as Switchboard would, with `authorization`. */
async function post(authorization) {
  const headers = { 'content-type': 'application/json', 'switchboard-notification-sequence': '1' };
  if (authorization) headers.authorization = authorization;
  const body = {
    '@odata.type': '#microsoft.graph.commsNotifications',
    value: [{ changeType: 'updated', resourceUrl: '/communications/calls/0c0ffee0-0000-4000-8000-0000000000aa', resourceData: { state: 'established' } }],
  };
  const answer = await fetch(kit.receiver.url, { method: 'POST', headers, body: JSON.stringify(body) });
  return answer.status;
}

describe('notification tokens', () => {
  test('the server\'s notifications pass the checks', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    assert.deepEqual(kit.receiver.states(callId), ['establishing', 'established']);
    assert.deepEqual(kit.receiver.notifications(callId).map((notification) => notification.sequence), [1, 2]);
    assert.deepEqual(kit.receiver.invalid, []);
  });

  test('a POST without a token is refused', async () => {
    assert.equal(await post(undefined), 401);
    assert.match(kit.receiver.invalid[0].reason, /no "Authorization: Bearer <token>" header/);
    assert.deepEqual(kit.receiver.received, []);
    assert.throws(() => kit.receiver.assertClean(), /a notification with an invalid token: no "Authorization/);
  });

  test('a token signed by a key the server does not publish is refused', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    assert.equal(await post(`Bearer ${jwt({ kid: 'forged-key' }, notificationClaims(), privateKey)}`), 401);
    assert.match(kit.receiver.invalid[0].reason, /no key forged-key in the server's key set/);
  });

  test('a token signed by another key under the server\'s key id is refused', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const [serverHeader] = (await kit.switchboard.token()).split('.');
    const { kid } = JSON.parse(Buffer.from(serverHeader, 'base64url').toString());
    assert.equal(await post(`Bearer ${jwt({ kid }, notificationClaims(), privateKey)}`), 401);
    assert.match(kit.receiver.invalid[0].reason, /the signature does not match key/);
  });

  test('a genuine token whose claims were changed is refused', async () => {
    const [header, , signature] = (await kit.switchboard.token()).split('.');
    const claims = Buffer.from(JSON.stringify(notificationClaims())).toString('base64url');
    assert.equal(await post(`Bearer ${header}.${claims}.${signature}`), 401);
    assert.match(kit.receiver.invalid[0].reason, /the signature does not match key/);
  });

  test('a genuine token of another kind (a Graph app token) is refused for its issuer', async () => {
    assert.equal(await post(`Bearer ${await kit.switchboard.token()}`), 401);
    assert.match(kit.receiver.invalid[0].reason, /^iss is "https:\/\/[^"]+", not "https:\/\/api\.botframework\.com"$/);
  });

  test('an unsigned token is refused', async () => {
    const encode = (part) => Buffer.from(JSON.stringify(part)).toString('base64url');
    assert.equal(await post(`Bearer ${encode({ alg: 'none' })}.${encode(notificationClaims())}.`), 401);
    assert.match(kit.receiver.invalid[0].reason, /alg is "none", not "RS256"/);
  });
});

describe('NotificationTokenValidator claims', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const audience = '0c0ffee0-0000-4000-8000-000000000001';
  let server;
  let validator;
  const now = () => Math.floor(Date.now() / 1000);
  const token = (claims) => `Bearer ${jwt({ kid: 'k1' }, { iss: 'https://api.botframework.com', aud: audience, exp: now() + 600, ...claims }, privateKey)}`;

  before(async () => {
    server = http.createServer((req, res) => {
      const origin = `http://127.0.0.1:${server.address().port}`;
      const documents = {
        '/v1/.well-known/OpenIdConfiguration': { issuer: 'https://api.botframework.com', jwks_uri: `${origin}/v1/keys` },
        '/v1/keys': { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'RS256' }] },
      };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(documents[req.url]));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    validator = new NotificationTokenValidator({
      metadataUrl: `http://127.0.0.1:${server.address().port}/v1/.well-known/OpenIdConfiguration`,
      audience,
    });
  });
  after(() => server.close());

  test('a valid token gives its claims', async () => {
    assert.equal((await validator.validate(token({ sub: 'x' }))).sub, 'x');
    assert.equal((await validator.validate(token({ aud: ['other', audience] }))).iss, 'https://api.botframework.com');
  });

  test('another audience is refused', async () => {
    await assert.rejects(validator.validate(token({ aud: 'someone-else' })), /aud is "someone-else", not the app id/);
  });

  test('another issuer is refused', async () => {
    await assert.rejects(validator.validate(token({ iss: 'https://evil.example' })), /iss is "https:\/\/evil\.example"/);
  });

  test('the issuer can be given instead of taken from the metadata', async () => {
    const strict = new NotificationTokenValidator({ metadataUrl: validator.metadataUrl, audience, issuer: 'https://issuer.example' });
    assert.equal((await strict.validate(token({ iss: 'https://issuer.example' }))).iss, 'https://issuer.example');
    await assert.rejects(strict.validate(token({})), /iss is "https:\/\/api\.botframework\.com", not "https:\/\/issuer\.example"/);
  });

  test('an expired token is refused, within five minutes of leeway', async () => {
    await validator.validate(token({ exp: now() - 60 }));
    await assert.rejects(validator.validate(token({ exp: now() - 600 })), /the token expired at/);
    await assert.rejects(validator.validate(token({ exp: undefined })), /the token has no exp/);
  });

  test('a token not valid yet is refused', async () => {
    await assert.rejects(validator.validate(token({ nbf: now() + 3600 })), /the token is not valid before/);
  });

  test('what is not a JWT is refused', async () => {
    await assert.rejects(validator.validate('Bearer abc'), /not a JWT/);
    await assert.rejects(validator.validate('Basic abc'), /no "Authorization: Bearer <token>" header/);
  });
});

describe('receiving', () => {
  test('waitFor() waits for what comes later', async () => {
    const callId = await callParty(alice);
    const established = kit.receiver.waitFor(callId, { state: 'established', changeType: 'updated' });
    await kit.switchboard.advance(1);
    assert.equal((await established).sequence, 2);
    assert.equal((await established).state, 'established');
    assert.equal((await established).path, '/api/calls');
    assert.match((await established).headers.authorization, /^Bearer /);
    assert.equal((await kit.receiver.waitFor(null, { state: 'ESTABLISHED' })).callId, callId);
    assert.equal(kit.receiver.notifications().length, 2);
    assert.equal((await kit.receiver.waitFor(callId, { since: 1 })).sequence, 2);
    assert.equal((await kit.receiver.waitFor(callId, { match: (notification) => notification.sequence === 1 })).resourceData.state, 'establishing');
  });

  test('waitFor() says what came when it times out', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(0);
    await assert.rejects(kit.receiver.waitFor(callId, { state: 'established', timeout: 50 }),
      new RegExp(`waitFor\\("${callId}", \\{"state":"established"\\}\\) timed out after 50 ms\\.\\n`
        + 'Notifications of this call received: #1 updated establishing\\.\\n'
        + '.*await switchboard\\.advance\\(seconds\\)'));
    await assert.rejects(kit.receiver.waitFor('0c0ffee0-0000-4000-8000-0000000000bb', { timeout: 10 }),
      /No notification of this call was received \(calls seen: .*\); was its callbackUri http:\/\/127\.0\.0\.1:\d+\/api\/calls\?/);
    assert.throws(() => kit.receiver.waitFor({ state: 'established' }), /expected a call id \(a string\), got \{"state":"established"\}/);
  });

  test('waitFor() matches finished operations by id or clientContext', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    const { body: operation } = await kit.switchboard.graph('POST', `/communications/calls/${callId}/playPrompt`, {
      clientContext: 'greeting',
      prompts: [{ '@odata.type': '#microsoft.graph.mediaPrompt', mediaInfo: { uri: kit.receiver.prompt('greeting', 2) } }],
    });
    assert.equal(operation.status, 'running');
    await kit.switchboard.advance(1);
    await assert.rejects(kit.receiver.waitFor(callId, { operation: 'greeting', timeout: 20 }), /timed out/);
    await kit.switchboard.advance(1);
    const done = await kit.receiver.waitFor(callId, { operation: operation.id });
    assert.equal(done.kind, 'operation');
    assert.equal(done.operationId, operation.id);
    assert.equal(done.status, 'completed');
    assert.equal(done.clientContext, 'greeting');
    assert.deepEqual([done.resultInfo.code, done.resultInfo.subcode], [200, 0]);
    assert.equal(await kit.receiver.waitFor(callId, { operation: 'GREETING' }), done);
  });

  test('failNext() refuses POSTs, which Switchboard retries', async () => {
    kit.receiver.failNext(2, { status: 500 });
    const callId = await callParty(alice);
    await kit.switchboard.advance(0); // the first attempt is refused
    await kit.switchboard.advance(2); // the retry after 1 s (±20 %) is refused too
    assert.deepEqual(kit.receiver.notifications(callId), []);
    await kit.switchboard.advance(3); // the next retry, 2 s (±20 %) after that one, is taken
    assert.deepEqual(kit.receiver.states(callId), ['establishing', 'established']);
    const [first] = await kit.switchboard.deliveries(callId);
    assert.deepEqual(first.attempts.map((attempt) => attempt.status), [500, 500, 202]);
  });

  test('a handler that throws gets the POST answered 500 and is reported', async () => {
    kit.receiver.onNotification = (notification) => {
      if (notification.resourceData.state === 'establishing') throw new Error('the bot broke');
    };
    const callId = await callParty(alice);
    await kit.switchboard.advance(0);
    assert.equal(kit.receiver.errors[0].message, 'the bot broke');
    assert.throws(() => kit.receiver.assertClean(), /the bot failed: Error: the bot broke/);
    const [first] = await kit.switchboard.deliveries(callId);
    assert.deepEqual(first.attempts.map((attempt) => attempt.status), [500]);
    kit.receiver.clear();
    assert.doesNotThrow(() => kit.receiver.assertClean());
  });

  test('the handler runs before the POST is answered, so a settled advance includes its work', async () => {
    const seen = [];
    kit.receiver.onNotification = async (notification) => {
      seen.push(notification.resourceData.state);
      if (notification.resourceData.state === 'established') {
        await kit.switchboard.graph('DELETE', `/communications/calls/${notification.callId}`);
      }
    };
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    assert.deepEqual(kit.receiver.states(callId), ['establishing', 'established', 'terminating', 'terminated']);
    assert.deepEqual(seen, ['establishing', 'established', 'terminating', 'terminated']);
  });

  test('forwardTo passes each POST on to the bot\'s own endpoint and answers with the bot\'s answer', async () => {
    const posts = [];
    const bot = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => { body += chunk; });
      req.on('end', () => {
        posts.push({ headers: req.headers, body: JSON.parse(body) });
        res.writeHead(posts.length === 1 ? 500 : 202).end();
      });
    });
    await new Promise((resolve) => bot.listen(0, '127.0.0.1', resolve));
    const receiver = await Receiver.start({ switchboard: kit.switchboard, forwardTo: `http://127.0.0.1:${bot.address().port}/bot/calls` });
    try {
      const { body: call } = await kit.switchboard.graph('POST', '/communications/calls', {
        callbackUri: receiver.url,
        targets: [{ identity: { user: { id: alice } } }],
        requestedModalities: ['audio'],
        mediaConfig: { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' },
      });
      await kit.switchboard.advance(0); // the bot answers 500 to the first POST
      await kit.switchboard.advance(2); // the retry and Alice's answer get 202
      assert.deepEqual(posts.map((post) => post.headers['switchboard-notification-sequence']), ['1', '1', '2']);
      assert.match(posts[0].headers.authorization, /^Bearer ey/);
      assert.equal(posts[2].body.value[0].resourceData.state, 'established');
      assert.deepEqual(receiver.states(call.id), ['establishing', 'established']);
      assert.throws(() => receiver.assertClean(), /the bot at http:\/\/127\.0\.0\.1:\d+\/bot\/calls answered 500 to notification 1/);
      const [first] = await kit.switchboard.deliveries(call.id);
      assert.deepEqual(first.attempts.map((attempt) => attempt.status), [500, 202]);
    } finally {
      await receiver.close();
      bot.close();
    }
  });

  test('prompt() serves a WAV file of the given length', async () => {
    const url = kit.receiver.prompt('beep', 1.5);
    const answer = await fetch(url);
    assert.equal(answer.headers.get('content-type'), 'audio/wav');
    const wav = Buffer.from(await answer.arrayBuffer());
    assert.equal(wav.toString('ascii', 0, 4), 'RIFF');
    assert.equal(wav.readUInt32LE(40) / wav.readUInt32LE(28), 1.5);
    assert.equal(kit.receiver.prompt('beep', 1.5), url);
    assert.throws(() => kit.receiver.prompt('beep', 2), /already served with 1\.5 s/);
    assert.equal((await fetch(`${kit.receiver.origin}/prompts/unknown.wav`)).status, 404);
  });
});
