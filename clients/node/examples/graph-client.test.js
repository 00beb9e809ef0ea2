// A bot that uses Microsoft's Graph client and azure-identity, pointed at Switchboard over TLS.
// The first test needs `switchboard exec`, which sets NODE_EXTRA_CA_CERTS before Node starts:
//   switchboard exec -- node --test examples/graph-client.test.js
// The second hands the local authority to the SDKs itself, so it also runs in a process that
// started its own server (Switchboard.start()).
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, test } from 'node:test';
import { rootCertificates } from 'node:tls';

import { ClientSecretCredential } from '@azure/identity';
import { Client } from '@microsoft/microsoft-graph-client';
import { TokenCredentialAuthenticationProvider } from
  '@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials/index.js';
import { Agent } from 'undici';

import { devSetup, useSwitchboard } from 'switchboard-testkit';

/**
 * How the bot builds its Graph client: a bot written for the real service changes only the
 * values passed in. `ca` is an authority to trust beyond Node's own, for a process that could
 * not set NODE_EXTRA_CA_CERTS before it started.
 */
function graphClient({ tenantId, appId, clientSecret, baseUrl, ca }) {
  const trust = ca ? { ca: [...rootCertificates, ca] } : undefined;
  const credential = new ClientSecretCredential(tenantId, appId, clientSecret, {
    authorityHost: baseUrl, // was https://login.microsoftonline.com (the default)
    disableInstanceDiscovery: true, // do not ask Microsoft's hosts about it
    ...(trust ? { tlsOptions: trust } : {}),
  });
  const authProvider = new TokenCredentialAuthenticationProvider(credential, {
    scopes: ['https://graph.microsoft.com/.default'],
  });
  return Client.initWithMiddleware({
    authProvider,
    baseUrl, // was https://graph.microsoft.com (the default)
    customHosts: new Set([new URL(baseUrl).hostname]), // the token goes only to Graph's hosts and these
    ...(trust ? { fetchOptions: { dispatcher: new Agent({ connect: trust }) } } : {}),
  });
}

const kit = useSwitchboard({ before, beforeEach, afterEach, after });

/** Places a call to Alice with the client, reads it back, hangs up. */
async function callAliceAndHangUp(client) {
  const { switchboard, receiver } = kit;
  const call = await client.api('/communications/calls').post({
    callbackUri: receiver.url,
    targets: [{ identity: { user: { id: devSetup.parties.alice } } }],
    requestedModalities: ['audio'],
    mediaConfig: { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' },
  });
  assert.equal(call.state, 'establishing');

  await switchboard.advance(1); // Alice answers after 1 s
  await receiver.waitFor(call.id, { state: 'established' });
  const again = await client.api(`/communications/calls/${call.id}`).get();
  assert.equal(again.state, 'established');

  await client.api(`/communications/calls/${call.id}`).delete();
  await switchboard.advance(0);
  const ended = await receiver.waitFor(call.id, { state: 'terminated' });
  assert.equal(ended.resultInfo.subcode, 5001);
}

const { NODE_EXTRA_CA_CERTS, SWITCHBOARD_CA_FILE } = process.env;
const nodeTrustsSwitchboard = Boolean(SWITCHBOARD_CA_FILE) && NODE_EXTRA_CA_CERTS === SWITCHBOARD_CA_FILE;

test('the Graph client trusts Switchboard through NODE_EXTRA_CA_CERTS', {
  skip: !nodeTrustsSwitchboard && 'run under `switchboard exec`, which sets NODE_EXTRA_CA_CERTS',
}, async () => {
  const { switchboard } = kit;
  await callAliceAndHangUp(graphClient({
    tenantId: switchboard.tenantId,
    appId: switchboard.appId,
    clientSecret: switchboard.clientSecret,
    baseUrl: switchboard.httpsUrl,
  }));
});

test('the Graph client trusts Switchboard through the authority handed to it', async () => {
  const { switchboard } = kit;
  await callAliceAndHangUp(graphClient({
    tenantId: switchboard.tenantId,
    appId: switchboard.appId,
    clientSecret: switchboard.clientSecret,
    baseUrl: switchboard.httpsUrl,
    ca: switchboard.ca,
  }));
});
