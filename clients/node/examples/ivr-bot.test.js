// An IVR bot tested against Switchboard with node:test. The bot answers incoming calls, plays a
// menu once a call is established, and transfers the caller to the front desk (Bob) on key 1.
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, test } from 'node:test';

import { devSetup, useSwitchboard } from 'switchboard-testkit';

const { alice, bob } = devSetup.parties;
const MEDIA = { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' };

/** The bot under test: reacts to each notification with Graph requests. */
class IvrBot {
  constructor(kit) {
    this.kit = kit;
    this.states = new Map(); // call id -> last state seen
  }

  async onNotification(notification) {
    if (notification.kind !== 'call') return;
    const call = notification.resourceData;
    const previous = this.states.get(call.id);
    this.states.set(call.id, call.state);
    if (call.state === 'incoming') {
      await this.request('answer', call.id, {
        callbackUri: this.kit.receiver.url, acceptedModalities: ['audio'], mediaConfig: MEDIA,
      });
    } else if (call.state === 'established' && previous !== 'established') {
      await this.request('subscribeToTone', call.id, { clientContext: 'tones' });
      await this.request('playPrompt', call.id, {
        clientContext: 'menu',
        prompts: [{
          '@odata.type': '#microsoft.graph.mediaPrompt',
          mediaInfo: { uri: this.kit.receiver.prompt('menu', 3), resourceId: '7d2a9c1e-0000-4000-8000-000000000001' },
        }],
      });
    } else if (notification.tone === 'tone1') {
      await this.request('transfer', call.id, {
        transferTarget: { endpointType: 'default', identity: { user: { id: bob } } },
      });
    }
  }

  async request(action, callId, body) {
    const { status, body: answer } = await this.kit.switchboard.graph(
      'POST', `/communications/calls/${callId}/${action}`, body);
    if (status >= 300) throw new Error(`${action} answered ${status}: ${JSON.stringify(answer)}`);
  }
}

const kit = useSwitchboard({ before, beforeEach, afterEach, after }, {
  onNotification: (notification) => bot.onNotification(notification),
});
const bot = new IvrBot(kit);

/** The test places a call to a party, as the bot would for an outbound campaign. */
async function callParty(party) {
  const { status, body } = await kit.switchboard.graph('POST', '/communications/calls', {
    callbackUri: kit.receiver.url,
    targets: [{ identity: { user: { id: party } } }],
    requestedModalities: ['audio'],
    mediaConfig: MEDIA,
  });
  assert.equal(status, 201);
  return body.id;
}

test('plays the menu once the callee answers', async () => {
  const { switchboard, receiver } = kit;
  const callId = await callParty(alice);

  await switchboard.advance(1); // Alice answers after 1 s
  await receiver.waitFor(callId, { state: 'established' });
  await switchboard.advance(3); // the 3-second menu plays to its end

  const menu = await receiver.waitFor(callId, { operation: 'menu' });
  assert.equal(menu.status, 'completed');
  const { heard } = await switchboard.party(alice);
  assert.ok(heard.some((command) => command.command === 'play'));
});

test('transfers the caller to the front desk on key 1', async () => {
  const { switchboard, receiver } = kit;
  const callId = await callParty(alice);
  await switchboard.advance(1);

  await switchboard.press(alice, '1');
  await switchboard.advance(0); // the tone notification reaches the bot, which transfers
  await receiver.waitFor(callId, { state: 'transferring' });
  await switchboard.advance(3); // Bob answers after 3 s

  const ended = await receiver.waitFor(callId, { state: 'terminated' });
  assert.deepEqual([ended.resultInfo.code, ended.resultInfo.subcode], [200, 7015]);
  const { calls } = await switchboard.party(bob);
  const transferred = calls.find((call) => call.callId === callId);
  assert.equal(transferred.state, 'established'); // Alice and Bob talk on without the bot
});

test('answers an incoming call and plays the menu', async () => {
  const { switchboard, receiver } = kit;
  const callId = await switchboard.dial(bob, { callbackUri: receiver.url });

  await switchboard.advance(0); // the bot gets the incoming call and answers it
  await receiver.waitFor(callId, { state: 'established' });
  await switchboard.advance(3);

  await receiver.waitFor(callId, { operation: 'menu' });
  assert.deepEqual(receiver.states(callId), ['incoming', 'establishing', 'established']);
});

test('a callback that fails is retried, and the call is still answered', async () => {
  const { switchboard, receiver } = kit;
  receiver.failNext(1, { status: 503 });
  const callId = await switchboard.dial(bob, { callbackUri: receiver.url });

  await switchboard.advance(0); // the incoming-call notification is refused
  assert.equal(receiver.notifications(callId).length, 0);
  await switchboard.advance(2); // retried after 1 s (±20 %), then the bot answers

  await receiver.waitFor(callId, { state: 'established' });
  const [incoming] = await switchboard.deliveries(callId);
  assert.deepEqual(incoming.attempts.map((attempt) => attempt.status), [503, 202]);
});
