// Jest runs ES modules with NODE_OPTIONS=--experimental-vm-modules and "transform": {} (see README.md).
// beforeAll, beforeEach, afterEach, afterAll, test and expect are Jest's globals.

import { devSetup, useSwitchboard } from 'switchboard-testkit';

const kit = useSwitchboard({ beforeAll, beforeEach, afterEach, afterAll });

test('the callee hangs up', async () => {
  const { switchboard, receiver } = kit;
  const { body: call } = await switchboard.graph('POST', '/communications/calls', {
    callbackUri: receiver.url,
    targets: [{ identity: { user: { id: devSetup.parties.alice } } }],
    requestedModalities: ['audio'],
    mediaConfig: { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' },
  });
  await switchboard.advance(1);
  await switchboard.hangUp(devSetup.parties.alice);
  await switchboard.advance(0);

  const ended = await receiver.waitFor(call.id, { state: 'terminated' });
  expect(ended.resultInfo).toMatchObject({ code: 200, subcode: 4521 });
  expect(receiver.states(call.id)).toEqual(['establishing', 'established', 'terminated']);
});
