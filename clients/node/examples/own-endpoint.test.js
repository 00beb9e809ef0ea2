// A bot with its own HTTP endpoint, tested through the receiver: Switchboard POSTs to the
// receiver, which checks the token, records the notification for waitFor, and passes the POST
// on to the bot as it came. The bot answers every incoming call.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, afterEach, before, beforeEach, test } from 'node:test';

import { devSetup, useSwitchboard } from 'switchboard-testkit';

/** The bot. In production its settings come from its environment; here from the test. */
async function startBot({ graphUrl, tokenUrl, appId, clientSecret, callbackUri }) {
  async function token() {
    const form = new URLSearchParams({
      grant_type: 'client_credentials', client_id: appId, client_secret: clientSecret,
      scope: 'https://graph.microsoft.com/.default',
    });
    const answer = await fetch(tokenUrl, { method: 'POST', body: form });
    return (await answer.json()).access_token;
  }

  async function answerCall(callId) {
    await fetch(`${graphUrl}/v1.0/communications/calls/${callId}/answer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await token()}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        callbackUri,
        acceptedModalities: ['audio'],
        mediaConfig: { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' },
      }),
    });
  }

  const server = http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    // A real bot checks the Authorization header here too.
    for (const notification of JSON.parse(body).value) {
      if (notification.changeType === 'created' && notification.resourceData.state === 'incoming') {
        await answerCall(notification.resourceData.id);
      }
    }
    res.writeHead(202).end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}/api/calls` };
}

const kit = useSwitchboard({ before, beforeEach, afterEach, after });
let bot;

before(async () => {
  await kit.ready; // node:test starts top-level before hooks together
  const { switchboard, receiver } = kit;
  bot = await startBot({
    graphUrl: switchboard.url,
    tokenUrl: `${switchboard.url}/${switchboard.tenantId}/oauth2/v2.0/token`,
    appId: switchboard.appId,
    clientSecret: switchboard.clientSecret,
    callbackUri: receiver.url, // the bot's public callback URL is the receiver
  });
  receiver.forwardTo = bot.url;
});

after(() => bot.server.close());

test('the bot answers an incoming call', async () => {
  const { switchboard, receiver } = kit;
  const callId = await switchboard.dial(devSetup.parties.frontDesk, { callbackUri: receiver.url });

  await switchboard.advance(0); // the bot gets the call and answers it
  await receiver.waitFor(callId, { state: 'established' });
  assert.deepEqual(receiver.states(callId), ['incoming', 'establishing', 'established']);

  await switchboard.hangUp(devSetup.parties.frontDesk);
  await switchboard.advance(0);
  const ended = await receiver.waitFor(callId, { state: 'terminated' });
  assert.deepEqual([ended.resultInfo.code, ended.resultInfo.subcode], [200, 540000]);
});
