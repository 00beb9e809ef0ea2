// The Switchboard helpers against a real server (the one of `switchboard exec`, or one started
// from SWITCHBOARD_BIN).
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';

import { devSetup, isInjected, Switchboard, SwitchboardError, useSwitchboard } from 'switchboard-testkit';

const { alice, bob } = devSetup.parties;
const MEDIA = { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' };

const kit = useSwitchboard({ before, beforeEach, afterEach, after });

function createCall(party) {
  return kit.switchboard.graph('POST', '/communications/calls', {
    callbackUri: kit.receiver.url,
    targets: [{ identity: { user: { id: party } } }],
    requestedModalities: ['audio'],
    mediaConfig: MEDIA,
  });
}

async function callParty(party) {
  const { status, body } = await createCall(party);
  assert.equal(status, 201, JSON.stringify(body));
  return body.id;
}

describe('attaching and starting', () => {
  test('start() names the binary it could not find', async () => {
    await assert.rejects(Switchboard.start({ bin: '/nonexistent/switchboard' }),
      /The Switchboard binary "\/nonexistent\/switchboard" was not found\. Set SWITCHBOARD_BIN/);
  });

  test('start() says why the server did not start', async (t) => {
    if (!process.env.SWITCHBOARD_BIN) return t.skip('needs SWITCHBOARD_BIN');
    const config = join(mkdtempSync(join(tmpdir(), 'switchboard-testkit-')), 'broken.toml');
    writeFileSync(config, '[[apps]]\napp_id = 42\n');
    await assert.rejects(Switchboard.start({ config }), /ended \(exit 1\) before its server was ready[^]*invalid configuration[^]*broken.toml:2/);
  });

  test('start() with a config file takes its app and admin token, and stop() stops it', async (t) => {
    if (!process.env.SWITCHBOARD_BIN) return t.skip('needs SWITCHBOARD_BIN');
    const config = join(mkdtempSync(join(tmpdir(), 'switchboard-testkit-')), 'switchboard.toml');
    writeFileSync(config, [
      '[admin]', 'token = "kit-admin-token"', '',
      '[[apps]]', 'app_id = "0c0ffee0-0000-4000-8000-000000000001"',
      'tenant_id = "0c0ffee0-0000-4000-8000-0000000000e1"', 'client_secret = "kit-secret"',
      'roles = ["Calls.Initiate.All"]', '',
    ].join('\n'));
    const switchboard = await Switchboard.start({ config });
    try {
      assert.equal(switchboard.appId, '0c0ffee0-0000-4000-8000-000000000001');
      assert.equal(switchboard.clientSecret, 'kit-secret');
      assert.equal(switchboard.adminToken, 'kit-admin-token');
      assert.match(switchboard.httpsUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
      assert.match(switchboard.ca, /BEGIN CERTIFICATE/);
      assert.deepEqual(await switchboard.calls(), []); // the control API with the admin token
      assert.equal((await switchboard.graph('GET', '/communications/calls/0c0ffee0-0000-4000-8000-00000000dead')).status, 404);
    } finally {
      await switchboard.stop();
    }
    await assert.rejects(switchboard.calls(), /ECONNREFUSED/);
  });

  test('fromEnv() needs SWITCHBOARD_URL', () => {
    assert.throws(() => Switchboard.fromEnv({}), /SWITCHBOARD_URL is not set: run the tests under `switchboard exec/);
  });

  test('fromEnv() takes the development app for what is not set', () => {
    const switchboard = Switchboard.fromEnv({ SWITCHBOARD_URL: 'http://127.0.0.1:8080/' });
    assert.equal(switchboard.url, 'http://127.0.0.1:8080');
    assert.equal(switchboard.httpsUrl, 'https://127.0.0.1:8080');
    assert.equal(switchboard.appId, devSetup.appId);
    assert.equal(switchboard.tenantId, devSetup.tenantId);
    assert.equal(switchboard.clientSecret, devSetup.clientSecret);
    assert.equal(switchboard.caFile, undefined);
  });
});

describe('Graph', () => {
  test('token() gets an app token for the app', async () => {
    const token = await kit.switchboard.token();
    const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
    assert.equal(claims.appid ?? claims.azp, kit.switchboard.appId);
    assert.equal(await kit.switchboard.token(), token); // kept while it is valid
  });

  test('graph() sends JSON with the token and returns any status', async () => {
    const callId = await callParty(alice);
    const { status, body, headers } = await kit.switchboard.graph('GET', `/communications/calls/${callId}`);
    assert.equal(status, 200);
    assert.match(String(headers['content-type']), /json/);
    assert.equal(body.state, 'establishing');
    const beta = await kit.switchboard.graph('GET', `/beta/communications/calls/${callId}`);
    assert.equal(beta.status, 200);
    const missing = await kit.switchboard.graph('GET', 'communications/calls/0c0ffee0-0000-4000-8000-00000000dead');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, '8522');
  });
});

describe('clock and reset', () => {
  test('advance() moves the clock and clockNow() reads it', async () => {
    const start = await kit.switchboard.clockNow();
    const moved = await kit.switchboard.advance(90);
    assert.equal(moved.getTime() - start.getTime(), 90_000);
    assert.deepEqual(await kit.switchboard.clockNow(), moved);
    assert.deepEqual(await kit.switchboard.advance(0, { settle: false }), moved);
  });

  test('reset() ends every call without a notification', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    await kit.switchboard.reset();
    assert.deepEqual(await kit.switchboard.calls(), []);
    await assert.rejects(kit.switchboard.deliveries(callId), (error) => error.status === 404);
  });
});

describe('parties', () => {
  test('press() sends keys the bot subscribed to', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    await kit.switchboard.graph('POST', `/communications/calls/${callId}/subscribeToTone`, {});
    assert.deepEqual(await kit.switchboard.press(alice, '1#'), [callId]);
    await kit.switchboard.advance(0);
    await kit.receiver.waitFor(callId, { tone: 'tone1' });
    await kit.receiver.waitFor(callId, { tone: 'pound' });
    assert.equal(kit.receiver.tones(callId), '1#');
  });

  test('press() outside a call throws what the server said', async () => {
    const error = await kit.switchboard.press(bob, '1').catch((caught) => caught);
    assert.ok(error instanceof SwitchboardError);
    assert.equal(error.status, 409);
    assert.equal(error.code, 'notInCall');
    assert.match(error.message, /^POST \/_switchboard\/v1\/parties\/.+\/tones answered 409 notInCall: /);
  });

  test('hangUp() ends the party\'s calls', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    assert.deepEqual(await kit.switchboard.hangUp(alice), [callId]);
    await kit.switchboard.advance(0);
    const ended = await kit.receiver.waitFor(callId, { state: 'terminated' });
    assert.equal(ended.resultInfo.subcode, 4521);
  });

  test('dial() rings the app with an incoming call', async () => {
    const callId = await kit.switchboard.dial(devSetup.parties.frontDesk, { callbackUri: kit.receiver.url });
    await kit.switchboard.advance(0);
    const incoming = await kit.receiver.waitFor(callId, { state: 'incoming' });
    assert.equal(incoming.changeType, 'created');
    const [live] = await kit.switchboard.calls({ state: 'incoming' });
    assert.equal(live.id, callId);
  });

  test('party() shows what the party heard', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    await kit.switchboard.graph('POST', `/communications/calls/${callId}/sendDtmfTones`, { tones: ['tone4', 'tone2'] });
    await kit.switchboard.advance(1);
    const view = await kit.switchboard.party(alice);
    assert.equal(view.calls.find((call) => call.callId === callId).tonesReceived, '42');
    assert.ok(view.heard.some((command) => command.command === 'sendDtmf'));
  });
});

describe('faults, calls and deliveries', () => {
  test('failCall() ends a call with the given reason', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    const resultInfo = await kit.switchboard.failCall(callId, { code: 410, subcode: 301005 });
    assert.equal(resultInfo.message, 'The call ended after a media connectivity failure.');
    await kit.switchboard.advance(0);
    const ended = await kit.receiver.waitFor(callId, { state: 'terminated' });
    assert.deepEqual(ended.resultInfo, { ...resultInfo, '@odata.type': '#microsoft.graph.resultInfo' });
  });

  test('calls() lists live calls, by state and app', async () => {
    const callId = await callParty(alice);
    assert.deepEqual((await kit.switchboard.calls({ state: 'establishing' })).map((call) => call.id), [callId]);
    assert.deepEqual(await kit.switchboard.calls({ state: 'established' }), []);
    assert.deepEqual(await kit.switchboard.calls({ appId: '0c0ffee0-0000-4000-8000-000000000001' }), []);
  });

  test('deliveries() lists every attempt, and redeliver() sends one again', async () => {
    const callId = await callParty(alice);
    await kit.switchboard.advance(1);
    const log = await kit.switchboard.deliveries(callId);
    assert.deepEqual(log.map((notification) => [notification.sequence, notification.status]), [[1, 'delivered'], [2, 'delivered']]);
    const again = await kit.switchboard.redeliver(callId, 2);
    assert.equal(again.status, 'delivered');
    assert.equal(again.attempt.status, 202);
    assert.equal(kit.receiver.notifications(callId).filter((notification) => notification.sequence === 2).length, 2);
    assert.deepEqual(kit.receiver.states(callId), ['establishing', 'established']);
  });
});

describe('fault rules', () => {
  test('setFaults() throttles a create with Retry-After and the Switchboard-Fault header', async () => {
    const rules = await kit.switchboard.setFaults({
      seed: 7, api: [{ route: 'calls', fault: 'throttle', times: 1, retry_after_secs: 2 }],
    });
    assert.deepEqual(rules, {
      seed: 7,
      api: [{ app_id: null, route: 'calls', fault: 'throttle', probability: 1, times: 1, retry_after_secs: 2, latency_ms: null }],
      notifications: [],
    });
    assert.deepEqual(await kit.switchboard.faults(), rules);
    const throttled = await createCall(alice);
    assert.equal(throttled.status, 429);
    assert.equal(throttled.headers['retry-after'], '2');
    assert.equal(throttled.headers['switchboard-fault'], 'throttle');
    assert.equal(throttled.body.error.code, 'TooManyRequests');
    assert.equal((await createCall(alice)).status, 201); // only once: `times`
    assert.equal((await kit.switchboard.calls()).length, 1);
  });

  test('the same seed draws the same faults', async () => {
    async function statuses(seed) {
      await kit.switchboard.setFaults({ seed, api: [{ route: 'calls', fault: 'unavailable', probability: 0.5 }] });
      const answers = [];
      for (let i = 0; i < 12; i += 1) answers.push((await createCall(alice)).status);
      return answers;
    }
    const first = await statuses(7);
    assert.deepEqual(new Set(first), new Set([201, 503]));
    assert.deepEqual(await statuses(7), first);
  });

  test('clearFaults() removes the rules, and reset() brings back the configured ones', async () => {
    await kit.switchboard.setFaults({ api: [{ fault: 'unavailable' }], notifications: [{ fault: 'drop_after' }] });
    assert.equal((await createCall(alice)).status, 503);
    await kit.switchboard.clearFaults();
    const { api, notifications } = await kit.switchboard.faults();
    assert.deepEqual([api, notifications], [[], []]);
    await callParty(alice);
    await kit.switchboard.setFaults({ api: [{ fault: 'unavailable' }] });
    await kit.switchboard.reset(); // the development setup configures no faults
    assert.deepEqual((await kit.switchboard.faults()).api, []);
  });

  test('setFaults() refuses a rule that is not one, and a seed a number cannot hold', async () => {
    const kept = await kit.switchboard.setFaults({ seed: 3, api: [{ route: 'calls', fault: 'throttle' }] });
    const error = await kit.switchboard.setFaults({ api: [{ fault: 'throttle', probability: 2 }] }).catch((caught) => caught);
    assert.ok(error instanceof SwitchboardError);
    assert.equal(error.status, 400);
    assert.match(error.message, /probability must be from 0 to 1/);
    await assert.rejects(kit.switchboard.setFaults({ seed: 2 ** 64 }), RangeError);
    assert.deepEqual(await kit.switchboard.faults(), kept);
  });

  test('isInjected() tells the attempts a fault failed', async () => {
    await kit.switchboard.setFaults({ notifications: [{ fault: 'fail_first', attempts: 1 }] });
    const callId = await callParty(alice);
    await kit.switchboard.advance(0); // the first attempt, failed by the fault
    await kit.switchboard.advance(1.3); // the retry: 1 s (±20 %)
    const [first] = await kit.switchboard.deliveries(callId);
    assert.equal(first.status, 'delivered');
    assert.deepEqual(first.attempts.map(isInjected), [true, false]);
    assert.match(first.attempts[0].error, /^injected fault: fail_first/);
  });
});

describe('meetings', () => {
  test('meeting() shows who is in it', async () => {
    const { joinMeetingId, passcode } = devSetup.meeting;
    const { status, body } = await kit.switchboard.graph('POST', '/communications/calls', {
      callbackUri: kit.receiver.url,
      meetingInfo: { '@odata.type': '#microsoft.graph.joinMeetingIdMeetingInfo', joinMeetingId, passcode },
      mediaConfig: MEDIA,
    });
    assert.equal(status, 201);
    await kit.switchboard.advance(1);
    const meeting = await kit.switchboard.meeting(joinMeetingId);
    assert.equal(meeting.active, true);
    assert.deepEqual(meeting.participants.map((participant) => participant.kind).sort(), ['bot', 'user', 'user']);
    assert.equal(meeting.participants.find((participant) => participant.kind === 'bot').callId, body.id);
  });
});
