// useSwitchboard(): one server for the file, a clean one for every test.
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, test } from 'node:test';

import { devSetup, useSwitchboard } from 'switchboard-testkit';

test('useSwitchboard() says which hooks it needs', () => {
  assert.throws(() => useSwitchboard({ beforeEach }), /needs the hooks \{before, beforeEach, after\} \(node:test\)/);
});

const kit = useSwitchboard({ before, beforeEach, afterEach, after });

test('the first test leaves a call and a notification behind', async () => {
  const { status } = await kit.switchboard.graph('POST', '/communications/calls', {
    callbackUri: kit.receiver.url,
    targets: [{ identity: { user: { id: devSetup.parties.erin } } }],
    requestedModalities: ['audio'],
    mediaConfig: { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' },
  });
  assert.equal(status, 201);
  await kit.switchboard.advance(0);
  assert.equal(kit.receiver.received.length, 1);
  kit.receiver.failNext(5);
});

test('the next test starts clean', async () => {
  assert.deepEqual(await kit.switchboard.calls(), []);
  assert.deepEqual(kit.receiver.received, []);
  const { body } = await kit.switchboard.graph('POST', '/communications/calls', {
    callbackUri: kit.receiver.url,
    targets: [{ identity: { user: { id: devSetup.parties.erin } } }],
    requestedModalities: ['audio'],
    mediaConfig: { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' },
  });
  await kit.switchboard.advance(0);
  assert.deepEqual(kit.receiver.states(body.id), ['establishing']); // failNext was forgotten
});
