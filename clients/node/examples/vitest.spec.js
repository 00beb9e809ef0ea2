import { afterAll, afterEach, beforeAll, beforeEach, expect, test } from 'vitest';

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
