// Fault recipes: a bot tested against the faults the real service shows, injected on purpose.
// Each test sets its rules with switchboard.setFaults(...); the reset before the next test takes
// them away. The bot places calls and plays a greeting once a call is established. For brevity
// its Graph client is the kit's switchboard.graph, and it waits for a notification with the
// receiver's waitFor; a real bot uses its own.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, beforeEach, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { devSetup, isInjected, useSwitchboard } from 'switchboard-testkit';

const { alice } = devSetup.parties;
const MEDIA = { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' };

/** The bot under test. */
class CallingBot {
  constructor(kit) {
    this.kit = kit;
    this.greeted = new Set(); // the calls greeted already
  }

  /**
   * Places a call to a user and resolves to its id. A throttled create is tried again after
   * Retry-After. Another failed create may have made the call all the same, so before it tries
   * again the bot looks for a notification at the callback URL that create gave.
   */
  async placeCall(user) {
    const request = randomUUID();
    for (let attempt = 1; ; attempt += 1) {
      const { status, headers, body } = await this.kit.switchboard.graph('POST', '/communications/calls', {
        callbackUri: `${this.kit.receiver.url}?request=${request}`,
        targets: [{ identity: { user: { id: user } } }],
        requestedModalities: ['audio'],
        mediaConfig: MEDIA,
      });
      if (status === 201) return body.id;
      const made = status === 429 ? undefined : await this.callMadeBy(request);
      if (made) return made;
      if (attempt === 3) throw new Error(`no call placed: ${status} ${JSON.stringify(body)}`);
      await sleep(Number(headers['retry-after'] ?? 1) * 1000);
    }
  }

  /** The call a create made, if a notification about it came to that create's URL. */
  async callMadeBy(request) {
    const made = await this.kit.receiver
      .waitFor(null, { match: ({ path }) => path.endsWith(`request=${request}`), timeout: 1000 })
      .catch(() => undefined);
    return made?.callId;
  }

  async onNotification(notification) {
    if (notification.state === 'established') await this.greet(notification.callId);
  }

  /** Reads the call, for when no notification came; a real bot runs this on a timer. */
  async refresh(callId) {
    const { status, body } = await this.kit.switchboard.graph('GET', `/communications/calls/${callId}`);
    if (status === 200 && body.state === 'established') await this.greet(callId);
  }

  /** Plays the greeting, once per call, however the bot learnt the call was established. */
  async greet(callId) {
    if (this.greeted.has(callId)) return;
    this.greeted.add(callId);
    const { status, body } = await this.kit.switchboard.graph('POST', `/communications/calls/${callId}/playPrompt`, {
      clientContext: 'greeting',
      prompts: [{
        '@odata.type': '#microsoft.graph.mediaPrompt',
        mediaInfo: { uri: this.kit.receiver.prompt('greeting', 2) },
      }],
    });
    if (status !== 200) throw new Error(`playPrompt answered ${status}: ${JSON.stringify(body)}`);
  }
}

const kit = useSwitchboard({ before, beforeEach, afterEach, after }, {
  onNotification: (notification) => bot.onNotification(notification),
});
const bot = new CallingBot(kit);

/** How many times Alice heard the greeting. */
async function greetings() {
  const { heard } = await kit.switchboard.party(alice);
  return heard.filter(({ command }) => command === 'play').length;
}

// --- throttling ---------------------------------------------------------------------------------
test('a throttled create is tried again after Retry-After', async () => {
  const { switchboard } = kit;
  await switchboard.setFaults({ api: [{ route: 'calls', fault: 'throttle', times: 1, retry_after_secs: 1 }] });
  const started = Date.now();
  const callId = await bot.placeCall(alice);

  assert.ok(Date.now() - started >= 1000, 'the bot waited as Retry-After said');
  assert.deepEqual((await switchboard.calls()).map((call) => call.id), [callId]);
});

// --- a create that took effect but answered 503 -------------------------------------------------
test('a create that took effect is not made twice', async () => {
  const { switchboard } = kit;
  await switchboard.setFaults({ api: [{ route: 'calls', fault: 'commit_then_fail', times: 1 }] });
  const callId = await bot.placeCall(alice);

  const calls = await switchboard.calls(); // a bot that blindly tried again would have two
  assert.deepEqual(calls.map((call) => call.id), [callId], `the bot made ${calls.length} calls`);
});

// --- notifications that fail first --------------------------------------------------------------
test('notifications that fail first reach the bot later', async () => {
  const { switchboard, receiver } = kit;
  await switchboard.setFaults({ notifications: [{ fault: 'fail_first', attempts: 1 }] });
  const callId = await bot.placeCall(alice);
  await switchboard.advance(0); // the first notification's first attempt fails, unsent
  assert.deepEqual(receiver.states(callId), []);

  await switchboard.advance(1.5); // its retry (1 s, ±20 %); Alice answers: that one fails first
  await switchboard.advance(1.5); // and is retried in turn: the bot greets Alice
  assert.deepEqual(receiver.states(callId), ['establishing', 'established']);
  assert.equal(await greetings(), 1);
  const [first] = await switchboard.deliveries(callId);
  assert.deepEqual(first.attempts.map(isInjected), [true, false]);
});

// --- a dropped notification ---------------------------------------------------------------------
test('the bot reads the call when its notifications are dropped', async () => {
  const { switchboard, receiver } = kit;
  await switchboard.setFaults({ notifications: [{ fault: 'drop_after', attempts: 1 }] });
  const callId = await bot.placeCall(alice);
  await switchboard.advance(1); // Alice answers; the bot hears nothing of it

  assert.deepEqual(receiver.states(callId), []);
  const log = await switchboard.deliveries(callId);
  assert.deepEqual(log.map((notification) => notification.status), ['dead', 'dead']);
  assert.ok(log.every((notification) => isInjected(notification.attempts[0])));
  await bot.refresh(callId); // no news for a while: the bot reads the call, and greets Alice
  assert.equal(await greetings(), 1);
});

// --- a late notification ------------------------------------------------------------------------
test('a late notification does not make the bot act twice', async () => {
  const { switchboard, receiver } = kit;
  const callId = await bot.placeCall(alice);
  await switchboard.advance(0);
  await switchboard.setFaults({ notifications: [{ call_id: callId, fault: 'delay', delay_ms: 1000 }] });
  await switchboard.advance(1, { settle: false }); // Alice answers; the bot is told 1 s (real time) later
  assert.deepEqual(receiver.states(callId), ['establishing']);

  await bot.refresh(callId); // meanwhile the bot reads the call, finds it established, and greets
  await switchboard.advance(0); // waits for the late notification, and the bot's answer to it
  assert.deepEqual(receiver.states(callId), ['establishing', 'established']);
  assert.equal(await greetings(), 1);
  const [, late] = await switchboard.deliveries(callId);
  assert.ok(isInjected(late.attempts[0]));
});
